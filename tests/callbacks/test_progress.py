"""The progress bar redraws within its interval only, and always shows the last step."""

import lightning as L
import pytest
from lightning.pytorch.callbacks.progress import tqdm_progress
from lightning.pytorch.demos.boring_classes import BoringModel

from lmtemplate.callbacks.progress import ProgressBar


@pytest.mark.parametrize("interval, draws", [(3600.0, [1, 10]), (0.0, list(range(1, 11)))])
def test_the_training_bar_is_drawn_first_last_and_when_its_interval_has_passed(tmp_path, monkeypatch, interval, draws):
    drawn = []
    original = tqdm_progress._update_n
    monkeypatch.setattr(tqdm_progress, "_update_n", lambda bar, n: (drawn.append(n), original(bar, n)))
    trainer = L.Trainer(max_steps=10, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        callbacks=[ProgressBar(interval)], default_root_dir=tmp_path, enable_model_summary=False)
    trainer.fit(BoringModel())
    assert drawn == draws  # 64 batches an epoch: the 10th is drawn because it is max_steps
    assert trainer.progress_bar_callback.train_progress_bar.n == 10
