"""Image augmentation as one affine warp per image: pad-and-crop, flip, rotation and zoom composed.

Applying the augmentations one after the other (Keras' ``RandomCrop``, ``RandomFlip``,
``RandomRotation`` and ``RandomZoom`` in a ``Sequential``) warps every image up to four times,
resampling (and blurring) it at each warp, and costs a dataset map most of a small model's step:
on the digits recipe 250-350 us per batch of 32, against a 3 ms training step on two cores that the
pipeline shares. Each augmentation is an affine map of pixel coordinates, so their product is one
matrix per image and one ``ImageProjectiveTransformV3`` does them all, with a single bilinear
resampling.

The parameter ranges are Keras' (same meaning, same distributions): ``rotation`` is a fraction of a
full turn (angles uniform in ``[-rotation, rotation] * 2 pi``, about the image centre); ``zoom``
scales the sampled region by ``1 + u``, ``u`` uniform in ``[-zoom, zoom]`` (above 1 zooms out),
the same for height and width; ``flip`` mirrors with probability one half per axis; pad-and-crop
shifts by whole pixels uniform in ``[-crop_padding, crop_padding]`` (zero fill, like cropping a
zero-padded image back to its size), drawn per image. Areas from outside the image are filled with
zeros, like the Keras layers with ``fill_mode="constant"``.

The draws are stateless, a function of the run's seed ``s`` and the position in the stream: in-memory
images that are shuffled as whole epochs (``zoo.data.order.gathers_per_epoch``) are augmented a whole
epoch in one warp, seeded ``(s, epoch)`` (a map call per batch cost the digits recipe's step more
than the warp itself); other streams batch by batch, seeded ``(s, batch index)``. A resumed run,
which skips the batches already trained on, so augments exactly as an uninterrupted one did.
"""

from __future__ import annotations

import math
from typing import Any


def _matrices(aug: Any, size: tuple[int, int], batch: Any, seed: Any) -> list[Any]:
    """Per image, the ``[batch, 3, 3]`` maps from output to input coordinates (x = column, y = row)
    of every active augmentation, in the order they apply to the image: crop, flip, rotation, zoom."""
    import tensorflow as tf

    h, w = float(size[0]), float(size[1])
    seeds = tf.random.experimental.stateless_split(seed, 4)
    zero, one = tf.zeros([batch]), tf.ones([batch])

    def affine(a0, a1, a2, b0, b1, b2):
        return tf.reshape(tf.stack([a0, a1, a2, b0, b1, b2, zero, zero, one], axis=1), [-1, 3, 3])

    out = []
    if aug.crop_padding:
        p = int(aug.crop_padding)
        shift = tf.cast(tf.random.stateless_uniform([2, batch], seeds[0], -p, p + 1, dtype=tf.int32), tf.float32)
        out.append(affine(one, zero, shift[0], zero, one, shift[1]))
    if aug.flip != "none":
        flip = tf.random.stateless_uniform([2, batch], seeds[1]) < 0.5
        fx = tf.where(flip[0], -one, one) if aug.flip in ("horizontal", "horizontal_and_vertical") else one
        fy = tf.where(flip[1], -one, one) if aug.flip in ("vertical", "horizontal_and_vertical") else one
        out.append(affine(fx, zero, (1.0 - fx) * (w - 1) / 2, zero, fy, (1.0 - fy) * (h - 1) / 2))
    if aug.rotation:
        limit = float(aug.rotation) * 2.0 * math.pi
        angle = tf.random.stateless_uniform([batch], seeds[2], -limit, limit)
        cos, sin = tf.cos(angle), tf.sin(angle)
        x_off = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2
        y_off = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2
        out.append(affine(cos, -sin, x_off, sin, cos, y_off))
    if aug.zoom:
        scale = 1.0 + tf.random.stateless_uniform([batch], seeds[3], -float(aug.zoom), float(aug.zoom))
        out.append(affine(scale, zero, (w - 1) / 2 * (1 - scale), zero, scale, (h - 1) / 2 * (1 - scale)))
    return out


def warp(images: Any, matrices: Any) -> Any:
    """``images`` [B, H, W, C] resampled (bilinear, zero fill) at ``matrices`` [B, 3, 3] (output -> input)."""
    import tensorflow as tf

    flat = tf.reshape(matrices, [-1, 9])[:, :8]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=flat, output_shape=tf.shape(images)[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")


def augment_batch(images: Any, aug: Any, seed: Any) -> Any:
    """One batch ``[B, H, W, C]`` (float) augmented as configured with the stateless ``seed`` (2 ints)."""
    import tensorflow as tf

    mats = _matrices(aug, tuple(images.shape[1:3]), tf.shape(images)[0], seed)
    if not mats:
        return images
    combined = mats[0]
    for m in mats[1:]:  # out = zoom(rot(flip(crop(x)))): input point = C . F . R . Z . output point
        combined = tf.matmul(combined, m)
    return warp(images, combined)


def stream_seed(seed: int, index: Any) -> Any:
    """The stateless seed ``(seed, index)`` of one epoch or batch of a run's training stream."""
    import tensorflow as tf

    return tf.stack([tf.constant(seed, tf.int64), tf.cast(index, tf.int64)])


def augment_batches(ds: Any, aug: Any, seed: int) -> Any:
    """A dataset of ``(images, labels)`` batches, batch ``i`` augmented with the seed ``(seed, i)``."""
    import tensorflow as tf

    def one(i, batch):
        x, y = batch
        return augment_batch(x, aug, stream_seed(seed, i)), y

    return ds.enumerate().map(one, num_parallel_calls=tf.data.AUTOTUNE)
