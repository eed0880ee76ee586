"""The trainer mixins in configs/trainer build the strategy they promise (built, not launched: no GPU here)."""

from pathlib import Path

import pytest
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

from lmtemplate.models.gpt import Block
from lmtemplate.run import build_strategy, build_trainer, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "trainer"
ON_CPU = ["trainer.accelerator=cpu", "trainer.precision=32-true"]
pytestmark = pytest.mark.usefixtures("clean_registry")  # load_config scans ./plugins


def test_fsdp_wraps_and_checkpoints_each_block_and_saves_sharded():
    loaded = load_config([str(CONFIGS / "fsdp.yaml")], [])
    assert loaded.cfg.trainer["precision"] == "bf16-mixed"
    strategy = build_strategy(loaded.cfg, loaded.task.module)
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {Block}
    assert strategy._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes == {Block}
    assert strategy._state_dict_type == "sharded"
    assert strategy.sharding_strategy.name == "FULL_SHARD"


def test_fsdp_options_come_from_the_fsdp_section():
    loaded = load_config(
        [str(CONFIGS / "fsdp.yaml")], ["fsdp.activation_checkpointing=false", "fsdp.sharding_strategy=SHARD_GRAD_OP"]
    )
    strategy = build_strategy(loaded.cfg, loaded.task.module)
    assert not strategy._activation_checkpointing_kwargs
    assert strategy.sharding_strategy.name == "SHARD_GRAD_OP"


def test_ddp_mixin_builds_a_ddp_trainer(tmp_path):
    loaded = load_config([str(CONFIGS / "ddp.yaml")], [*ON_CPU, "trainer.devices=2"])
    trainer = build_trainer(loaded.cfg, tmp_path / "run", loaded.task.module, training=True)
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.num_devices == 2 and trainer.world_size == 2


def test_multinode_mixin_multiplies_the_world(tmp_path):
    files = [str(CONFIGS / "ddp.yaml"), str(CONFIGS / "multinode.yaml")]
    loaded = load_config(files, [*ON_CPU, "trainer.devices=2", "trainer.num_nodes=4"])
    trainer = build_trainer(loaded.cfg, tmp_path / "run", loaded.task.module, training=True)
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.num_nodes == 4 and trainer.world_size == 8
