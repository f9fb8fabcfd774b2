"""GroupedConv2D: Keras's grouped Conv2D computed by TensorFlow's kernel, without Keras's XLA detour."""

import numpy as np
import tensorflow as tf

from cnn.models.grouped_conv import GroupedConv2D


def xla_compiled_calls(graph: tf.Graph) -> list[str]:
  """Names of the ops of `graph` and of its function library marked for XLA compilation."""
  marked = [op.name for op in graph.get_operations() if op.node_def.attr["_XlaMustCompile"].b]
  for function in graph.as_graph_def().library.function:
    if function.attr["_XlaMustCompile"].b:
      marked.append(function.signature.name)
  return marked


def _step(layer):
  @tf.function
  def forward_and_backward(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = layer(x)
      loss = tf.reduce_sum(y * y)
    return y, tape.gradient(loss, [x, *layer.trainable_variables])
  return forward_and_backward


def test_values_gradients_and_variables_are_keras_conv2ds():
  x = tf.random.stateless_normal([4, 9, 9, 16], seed=[1, 2])
  keras_conv = tf.keras.layers.Conv2D(32, 3, 2, padding="same", groups=4, name="conv")
  ours = GroupedConv2D(32, 3, 2, padding="same", groups=4, name="conv")
  keras_conv(x), ours(x)
  assert [v.shape for v in ours.weights] == [v.shape for v in keras_conv.weights] == [(3, 3, 4, 32), (32,)]
  assert [v.path for v in ours.weights] == [v.path for v in keras_conv.weights]  # Checkpoints alike.
  for source, target in zip(keras_conv.weights, ours.weights):
    target.assign(tf.random.stateless_normal(source.shape, seed=[3, 4]))
    source.assign(target)
  (y_keras, grads_keras), (y_ours, grads_ours) = _step(keras_conv)(x), _step(ours)(x)
  np.testing.assert_allclose(y_ours, y_keras, rtol=1e-5, atol=1e-5)
  for ours_grad, keras_grad in zip(grads_ours, grads_keras):
    np.testing.assert_allclose(ours_grad, keras_grad, rtol=1e-4, atol=1e-4 * np.abs(keras_grad).max())


def test_it_runs_tensorflows_conv_kernel_where_keras_compiles_one_with_xla():
  x = tf.random.stateless_normal([2, 8, 8, 8], seed=[5, 6])
  graphs = {}
  for name, layer in (("keras", tf.keras.layers.Conv2D(8, 3, padding="same", groups=2)),
                      ("ours", GroupedConv2D(8, 3, padding="same", groups=2))):
    layer(x)
    graphs[name] = _step(layer).get_concrete_function(x).graph
  # The canary: Keras 3 still routes grouped convs through XLA (if not, GroupedConv2D can go).
  assert [name for name in xla_compiled_calls(graphs["keras"]) if "conv" in name]
  assert not xla_compiled_calls(graphs["ours"])
  assert "Conv2D" in {op.type for op in graphs["ours"].get_operations()}

