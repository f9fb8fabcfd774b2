"""Pictures for TensorBoard: labelled image grids and confusion matrices.

Pure functions from numpy arrays to RGB uint8 images `[H, W, 3]`, drawn with PIL (Pillow,
which TensorBoard itself depends on), so that class names are written into the picture and
no plotting library is needed. `cnn/summaries.py` decides when they are drawn.
"""

import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_SIZE = 10
LINE_HEIGHT = 12  # Pixels per line of caption text.
PAD = 4  # Pixels between tiles and around the edges.
MIN_TILE_WIDTH = 112  # Small images are enlarged to at least this width, so a caption fits under them.
EMPTY_RGB = (255, 255, 255)  # A confusion-matrix cell with no examples.
FULL_RGB = (8, 48, 107)  # A cell that holds all examples of its row.


def _font() -> ImageFont.ImageFont:
  # Pillow's bundled font (FreeType, Pillow >= 10.1): no font files to find on the machine.
  return ImageFont.load_default(size=FONT_SIZE)


def _fit(text: str, width: float, font: ImageFont.ImageFont) -> str:
  """`text`, shortened with an ellipsis until it is at most `width` pixels wide."""
  if font.getlength(text) <= width:
    return text
  while text and font.getlength(text + "…") > width:
    text = text[:-1]
  return text + "…"


def to_uint8(images: np.ndarray) -> np.ndarray:
  """Float images in [0, 1] (values outside are clipped) or uint8 images, as uint8."""
  if images.dtype == np.uint8:
    return images
  return (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def image_grid(images: np.ndarray, captions: Sequence[Sequence[str]], columns: int = 0) -> np.ndarray:
  """Tiles images into one picture, each with lines of caption text below it.

  Args:
    images: `[N, H, W, C]`, uint8 or float in [0, 1], C = 1 (grey) or 3.
    captions: N lists of caption lines (e.g. the class name).
    columns: tiles per row; 0 for about twice as many columns as rows.

  Returns:
    The grid, uint8 `[height, width, 3]`. Images narrower than `MIN_TILE_WIDTH` are enlarged by
    an integer factor (nearest neighbour, so pixels stay sharp).
  """
  images = to_uint8(np.asarray(images))
  count, height, width, channels = images.shape
  scale = max(1, math.ceil(MIN_TILE_WIDTH / width))
  tile_w, tile_h = width * scale, height * scale
  lines = max((len(c) for c in captions), default=0)
  columns = min(columns or math.ceil(math.sqrt(2 * count)), count)
  rows = math.ceil(count / columns)
  cell_w, cell_h = tile_w + PAD, tile_h + lines * LINE_HEIGHT + PAD
  canvas = Image.new("RGB", (columns * cell_w + PAD, rows * cell_h + PAD), EMPTY_RGB)
  draw, font = ImageDraw.Draw(canvas), _font()
  for i, (image, caption) in enumerate(zip(images, captions)):
    x, y = PAD + (i % columns) * cell_w, PAD + (i // columns) * cell_h
    tile = Image.fromarray(image[..., 0] if channels == 1 else image).convert("RGB")
    canvas.paste(tile.resize((tile_w, tile_h), Image.Resampling.NEAREST), (x, y))
    for k, line in enumerate(caption):
      draw.text((x, y + tile_h + k * LINE_HEIGHT), _fit(line, tile_w, font), fill="black", font=font)
  return np.asarray(canvas)


def confusion_matrix_image(matrix: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
  """Draws a confusion matrix: rows are true classes, columns predicted classes.

  A cell's colour is its share of the row (the fraction of that class predicted as the column's
  class: white 0, dark blue 1), so the diagonal reads as per-class recall. Counts are printed in
  the cells and class names beside the rows and above the columns when the cells are large
  enough for text (up to about 40 classes).

  Args:
    matrix: `[n, n]` counts, `matrix[true, predicted]`.
    class_names: n names.

  Returns:
    uint8 `[height, width, 3]`.
  """
  matrix = np.asarray(matrix)
  n = len(matrix)
  cell = int(np.clip(480 // n, 4, 40))
  font = _font()
  names = [_fit(name, 100, font) for name in class_names] if cell >= LINE_HEIGHT else []
  label_w = int(max((font.getlength(name) for name in names), default=0)) + 2 * PAD
  title = "rows: true class, columns: predicted class"
  title_h = LINE_HEIGHT + PAD
  left, top = label_w, title_h + label_w
  size = n * cell
  canvas = Image.new("RGB", (max(left + size, int(font.getlength(title))) + PAD, top + size + PAD), EMPTY_RGB)
  draw = ImageDraw.Draw(canvas)
  draw.text((PAD, 0), title, fill="black", font=font)

  rows = matrix.sum(axis=1, keepdims=True)
  share = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
  empty, full = np.array(EMPTY_RGB, float), np.array(FULL_RGB, float)
  for i in range(n):
    for j in range(n):
      x, y = left + j * cell, top + i * cell
      colour = tuple(int(round(c)) for c in empty + share[i, j] * (full - empty))
      draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=colour)
      if cell >= 24 and matrix[i, j]:
        text = str(int(matrix[i, j]))
        text = text if font.getlength(text) <= cell - 2 else "…"
        draw.text((x + (cell - font.getlength(text)) / 2, y + (cell - FONT_SIZE) / 2), text,
                  fill="white" if share[i, j] > 0.5 else "black", font=font)

  for i, name in enumerate(names):
    y = top + i * cell + (cell - FONT_SIZE) / 2
    draw.text((left - PAD - font.getlength(name), y), name, fill="black", font=font)
    # Column names run upwards: drawn on their own strip, then rotated.
    strip = Image.new("RGB", (label_w, LINE_HEIGHT), EMPTY_RGB)
    ImageDraw.Draw(strip).text((PAD, 0), name, fill="black", font=font)
    canvas.paste(strip.rotate(90, expand=True), (left + i * cell + (cell - LINE_HEIGHT) // 2, title_h))
  return np.asarray(canvas)
