"""The console of a default fit, validate and predict: our lines, none of the Lightning lines we drop."""

import logging
import subprocess
import sys
import warnings

from lmtemplate.callbacks.console import DROPPED_LINES, DROPPED_WARNINGS, quiet, synced_elsewhere
from test_run import TINY

SCRIPT = """
import sys
from lmtemplate.cli import main
tiny = sys.argv[1:]
assert main(["fit", *tiny, "trainer.enable_model_summary=true"]) == 0
assert main(["validate", "run.name=tiny"]) == 0
assert main(["predict", "run.name=tiny", "--prompt", "the", "generate.max_new_tokens=4"]) == 0
"""


def test_fit_validate_and_predict_print_none_of_the_dropped_lines(tmp_path):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *TINY, "trainer.max_steps=6", "trainer.val_check_interval=3"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    for line in (*DROPPED_LINES, *DROPPED_WARNINGS, "Total Flops", "FLOPs", "Mode"):
        assert line not in console, line
    assert "trainable parameters of" in proc.stdout and "run directory: outputs/tiny/version_0" in proc.stdout
    assert "Loaded model weights from the checkpoint at" in proc.stderr  # which checkpoint validate scored
    assert "1 prediction written to" in proc.stdout


def test_a_dropped_line_goes_by_its_exact_words_and_others_stay(caplog):
    quiet()
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info("GPU available: False, used: False")
        logger.info("GPU available: True (cuda), used: True")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: True (cuda), used: True"]


def test_only_the_pass_score_named_loses_the_advice_to_sync():
    synced_elsewhere("val/f1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        synced_elsewhere("val/f1")  # the filter sits above "always" once added again inside the block
        for key in ("val/f1", "val/loss"):
            warnings.warn(f"It is recommended to use `self.log({key!r}, ..., sync_dist=True)` when logging on epoch "
                          "level in distributed setting to accumulate the metric across devices.")
    assert [str(w.message).split("'")[1] for w in caught] == ["val/loss"]
