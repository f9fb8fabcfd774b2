"""The training loop's machinery, as Orbit splits it: a run (`run.train_and_evaluate`), the controller
(*when*), the trainer and its train step (*what* is trained), the evaluator and its eval step, the
actions after a step or an evaluation, and the metrics they report."""
