"""The head the quickstart ships (ProtTrans' CNN on one-hot) scores on CB513 what its metadata and RESULTS.md say."""

import json
import re

from conftest import REPO_ROOT
from prottrans_jax import cli

HEAD = REPO_ROOT / "prottrans_jax" / "data" / "heads" / "ss_onehot_cnn"


def _results_md_cb513() -> tuple[float, float]:
    """(Q3, Q8) in percent from RESULTS.md's row for this head."""
    row = next(line for line in (REPO_ROOT / "RESULTS.md").read_text().splitlines()
               if line.startswith("| **ProtTrans' CNN on one-hot**"))
    q3, q8 = re.findall(r"\*\*(\d+\.\d) ± \d\.\d\*\*", row)[:2]
    return float(q3), float(q8)


def test_shipped_head_scores_its_recorded_q3_on_cb513(shared_data, tmp_path, capsys):
    report = tmp_path / "report"
    assert cli.main(["heads", "evaluate", "--head", str(HEAD), "--data",
                     str(shared_data / "netsurfp" / "CB513_HHblits.csv"), "--report", str(report)]) == 0
    scores = json.loads((report / "scores.json").read_text())
    q3, q8 = 100 * scores["Q3"]["accuracy"], 100 * scores["Q8"]["accuracy"]
    recorded = json.loads((HEAD / "head.json").read_text())["test_scores"]["CB513"]
    assert abs(q3 - 100 * recorded["Q3"]) < 0.5 and abs(q8 - 100 * recorded["Q8"]) < 0.5
    md_q3, md_q8 = _results_md_cb513()
    assert abs(q3 - md_q3) < 0.5 and abs(q8 - md_q8) < 0.5
    assert f"Q3 {q3:.2f}%" in capsys.readouterr().out
