"""`vfmtok figures`: the README's three pictures from an exported model, at the sizes their layout implies."""

from PIL import Image

from vfmtok.cli import main
from vfmtok.export import export_pair


def test_figures_from_an_exported_model(tiny_pair, tmp_path, capsys):
    model = export_pair(tiny_pair / "gpt", tmp_path / "m")
    out = tmp_path / "docs"
    assert main(["figures", "--model", str(model), "--data", "sample", "--per-class", "4", "--out", str(out)]) == 0
    # 10 val images (one per class of the embedded sample) over their reconstructions, 32 px tiles + 2 px padding, x2
    assert Image.open(out / "reconstructions.png").size == ((10 * 34 + 2) * 2, (2 * 34 + 2) * 2)
    # 3 GPT classes, one row of 4 samples each (x2), a 120 px label column
    assert Image.open(out / "samples.png").size == (120 + (4 * 34 + 2) * 2, 3 * (34 + 2) * 2)
    # three 32 px images drawn at scale 4, 4 px padding
    assert Image.open(out / "anchor_regions.png").size == (3 * 132 + 4, 136)
    assert main(["figures", "--model", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "not an exported model folder" in capsys.readouterr().err
