"""The composed augmentation: each part does what Keras' layer of the same name does, the composed
warp equals the parts applied one after the other, and the draws are a function of (seed, batch)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from zoo.data.augment import _matrices, augment_batch, augment_batches, warp
from zoo.data.images import AugmentConfig


def _images(n=16, h=12, w=10, c=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, h, w, c)).astype("float32")


def _blob(n, h, w, cy, cx, sigma=2.0):
    """A smooth off-centre Gaussian: bilinear resampling changes it little, so warps compare closely."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)).astype("float32")
    return np.repeat(img[None, :, :, None], n, axis=0)


def _centroid(img):
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    m = img[..., 0]
    return float((yy * m).sum() / m.sum()), float((xx * m).sum() / m.sum())


@pytest.mark.parametrize("flip", ["horizontal", "vertical", "horizontal_and_vertical"])
def test_flip_mirrors_exactly_with_probability_one_half(flip):
    x = _images(n=64)
    out = augment_batch(tf.constant(x), AugmentConfig(flip=flip), tf.constant([3, 0], tf.int64)).numpy()
    axes = {"horizontal": [(), (2,)], "vertical": [(), (1,)],
            "horizontal_and_vertical": [(), (1,), (2,), (1, 2)]}[flip]
    seen = set()
    for a, b in zip(x, out):
        match = [ax for ax in axes if np.array_equal(np.flip(a, axis=[d - 1 for d in ax]) if ax else a, b)]
        assert len(match) == 1, "each image is itself or one of its mirrors, bit for bit"
        seen.add(match[0])
    assert seen == set(axes)  # every outcome occurs in 64 draws


def test_pad_and_crop_shifts_by_whole_pixels_with_zero_fill():
    x = _images(n=32, h=8, w=8, c=1)
    out = augment_batch(tf.constant(x), AugmentConfig(crop_padding=2), tf.constant([5, 1], tf.int64)).numpy()
    shifts = set()
    for a, b in zip(x, out):
        padded = np.pad(a, ((2, 2), (2, 2), (0, 0)))
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if np.allclose(padded[2 + dy:10 + dy, 2 + dx:10 + dx], b, atol=1e-3)]
        assert found, "each image is a crop of the zero-padded image"
        shifts.add(found[0])
    assert len(shifts) > 5  # shifts are drawn per image


def test_rotation_keeps_the_distance_from_the_centre_and_zoom_scales_it_within_range():
    h = w = 33
    x = _blob(32, h, w, cy=16, cx=24, sigma=1.5)  # 8 pixels right of the centre (16, 16)
    seed = tf.constant([1, 2], tf.int64)
    rotated = augment_batch(tf.constant(x), AugmentConfig(rotation=0.1), seed).numpy()
    angles = []
    for img in rotated:
        cy, cx = _centroid(img)
        assert np.hypot(cy - 16, cx - 16) == pytest.approx(8.0, abs=0.15)
        angles.append(np.degrees(np.arctan2(cy - 16, cx - 16)))
    assert max(np.abs(angles)) <= 36.0 + 0.5 and np.std(angles) > 5  # 0.1 of a turn either way, spread
    zoomed = augment_batch(tf.constant(x), AugmentConfig(zoom=0.2), seed).numpy()
    distances = [np.hypot(*np.subtract(_centroid(img), (16, 16))) for img in zoomed]
    # The sampled region scales by 1 + u (u in [-0.2, 0.2]): the blob's distance by 1 / (1 + u).
    assert min(distances) >= 8 / 1.2 - 0.15 and max(distances) <= 8 / 0.8 + 0.15
    assert max(distances) - min(distances) > 1.5


def test_the_composed_warp_equals_the_parts_applied_in_order():
    aug = AugmentConfig(flip="horizontal", rotation=0.08, zoom=0.15, crop_padding=3)
    x = tf.constant(_blob(16, 40, 36, cy=15, cx=22, sigma=4.0))
    seed = tf.constant([9, 4], tf.int64)
    composed = augment_batch(x, aug, seed).numpy()
    parts = _matrices(aug, (40, 36), 16, seed)
    assert len(parts) == 4
    one_by_one = x
    for m in parts:  # crop, flip, rotation, zoom: each resamples the previous result
        one_by_one = warp(one_by_one, m)
    assert np.abs(composed - one_by_one.numpy()).max() < 0.1  # two bilinear resamplings vs one, peak 1
    backwards = x
    for m in parts[::-1]:  # the wrong order puts the blob elsewhere: the check above can fail
        backwards = warp(backwards, m)
    assert np.abs(composed - backwards.numpy()).max() > 0.5


def test_batches_are_augmented_from_seed_and_batch_index_so_a_resumed_stream_matches():
    x = _images(n=24, h=8, w=8, c=1)
    ds = tf.data.Dataset.from_tensor_slices((x, np.arange(24))).batch(4)
    aug = AugmentConfig(rotation=0.1, zoom=0.1)
    first = [b[0] for b in augment_batches(ds, aug, seed=7).as_numpy_iterator()]
    again = [b[0] for b in augment_batches(ds, aug, seed=7).as_numpy_iterator()]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    # A resumed run skips the batches already trained on: batch i keeps its seed (seed, i).
    resumed = [b[0] for b in augment_batches(ds, aug, seed=7).skip(3).as_numpy_iterator()]
    for a, b in zip(first[3:], resumed):
        np.testing.assert_array_equal(a, b)
    other = [b[0] for b in augment_batches(ds, aug, seed=8).as_numpy_iterator()]
    assert not np.allclose(first[0], other[0])
    assert not np.allclose(first[0], x[:4])  # and it does augment


@pytest.mark.parametrize("per_epoch", [True, False])
def test_training_streams_augment_reproducibly_whole_epochs_or_batch_by_batch(monkeypatch, per_epoch):
    import zoo.data.order as order
    from zoo.data.images import ImageSource, image_dataset

    if not per_epoch:
        monkeypatch.setattr(order, "EPOCH_GATHER_BYTES", 0)
    src = ImageSource(labels=np.arange(10, dtype=np.int32), arrays=_images(n=10, h=8, w=8, c=1).astype(np.uint8))
    aug = AugmentConfig(flip="horizontal", rotation=0.1)

    def stream(augment=aug, seed=3):
        return image_dataset(src, (8, 8), 1, shuffle_seed=seed, batch_size=4, augment=augment)

    first = list(stream().take(8).as_numpy_iterator())  # 32 images: three epochs of 10
    plain = list(stream(augment=None).take(8).as_numpy_iterator())
    for (_, ya), (_, yp) in zip(first, plain):
        np.testing.assert_array_equal(ya, yp)  # the same order; only the images change
    assert not any(np.allclose(xa, xp) for (xa, _), (xp, _) in zip(first, plain))
    np.testing.assert_array_equal(np.concatenate([b[0] for b in first]),
                                  np.concatenate([b[0] for b in stream().take(8).as_numpy_iterator()]))
    resumed = list(stream().skip(5).take(3).as_numpy_iterator())  # what a run resumed at batch 5 sees
    for (xa, _), (xb, _) in zip(first[5:], resumed):
        np.testing.assert_array_equal(xa, xb)
    assert not np.allclose(first[0][0], stream(seed=4).take(1).get_single_element()[0].numpy())
    with pytest.raises(ValueError, match="training streams"):
        image_dataset(src, (8, 8), 1, augment=aug)
