"""The demo end to end, at a tiny size: images, metrics, the side-by-side PNG, quiet output."""

from __future__ import annotations

import json

import numpy as np


def test_demo_writes_images_metrics_and_a_side_by_side_png(tmp_path, capsys,
                                                           restore_torch_determinism):
    from ptychopinn_torch import demo

    out = tmp_path / "demo"
    assert demo.main(["--output_dir", str(out), "--max_epochs", "1", "--n-positions", "64",
                      "--accelerator", "cpu", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # quiet: no progress, banners or warnings
    lines = captured.out.strip().splitlines()
    assert lines[0].startswith("network alone:") and "SSIM" in lines[0]
    assert lines[1].startswith("network + refinement:")
    assert any(line.startswith("comparison_png: ") for line in lines)
    summary = json.loads((out / "demo_summary.json").read_text())
    metrics = summary["held_out_metrics"]
    assert metrics["refinement"]["iterations"] >= 1
    # Refinement improves on the (one-epoch) network's image.
    assert metrics["amplitude_ssim"] > metrics["network"]["amplitude_ssim"]
    assert metrics["phase_ssim"] > metrics["network"]["phase_ssim"]
    import matplotlib.image

    image = matplotlib.image.imread(out / "comparison.png")
    assert image.shape[1] > 2 * image.shape[0] * 0.5  # three columns side by side
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 100
    for name in ("train.npz", "test.npz"):
        assert (out / "data" / name).is_file()
    # The held-out scan is another view of the images, not the training scan.
    with np.load(out / "data" / "train.npz") as a, np.load(out / "data" / "test.npz") as b:
        assert not np.array_equal(a["diffraction"], b["diffraction"])
