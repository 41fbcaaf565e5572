from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from accelerate.utils.launch import prepare_multi_gpu_env
from torch.distributed.fsdp import StateDictType

from lmadapt.errors import LmadaptError
from lmadapt.train.distributed import check_launch

ACCELERATE = ["/venv/bin/python", "/venv/bin/accelerate", "launch"]


@pytest.mark.parametrize(
    "env",
    [
        {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"},  # torchrun whose process group never came up
        {"LOCAL_RANK": "1"},  # a second rank started without a world size
        {"OMPI_COMM_WORLD_SIZE": "4"},  # mpirun
    ],
)
def test_a_multi_process_environment_in_a_single_process_run_is_refused(env):
    with pytest.raises(LmadaptError, match="would train alone") as err:
        check_launch(1, env)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "argv",
    [
        [*ACCELERATE, "--cpu", "--num_processes", "2", "-m", "lmadapt", "sft", "c.yaml"],
        [*ACCELERATE, "--num_processes=2", "-m", "lmadapt", "sft", "c.yaml"],
        ["/usr/bin/accelerate-launch", "--num-processes", "8", "train.py"],
    ],
)
def test_accelerate_launch_that_starts_one_plain_process_is_refused(argv):
    with pytest.raises(LmadaptError, match="started one plain process"):
        check_launch(1, {"MASTER_ADDR": "127.0.0.1"}, argv)


@pytest.mark.parametrize(
    ("num_processes", "env", "argv"),
    [
        (1, {}, ["bash"]),  # a plain run
        (1, {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}, []),  # torchrun --nproc_per_node 1
        (1, {}, [*ACCELERATE, "--num_processes", "1", "x.py"]),
        (1, {}, ["python", "mytool.py", "--num_processes", "4"]),  # not accelerate: its flags mean nothing
        (2, {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}, []),  # a working 2-process launch
    ],
)
def test_consistent_launches_pass(num_processes, env, argv):
    check_launch(num_processes, env, argv)


@pytest.mark.parametrize("flag", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_a_sharding_engine_that_did_not_start_is_refused(flag):
    env = {flag: "true", "WORLD_SIZE": "2", "RANK": "0"}
    with pytest.raises(LmadaptError, match="need CUDA"):
        check_launch(2, env, (), DistributedType.MULTI_CPU)
    engine = DistributedType.FSDP if flag == "ACCELERATE_USE_FSDP" else DistributedType.DEEPSPEED
    check_launch(2, env, (), engine)


ACCELERATE_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"


@pytest.mark.parametrize("name", ["fsdp2", "fsdp2_multinode"])
def test_fsdp2_configs_set_up_sharded_fsdp2(name, monkeypatch):
    """What `accelerate launch --config_file` exports for each rank builds an FSDP2 plugin with
    sharded checkpoints (the launch itself needs GPUs)."""
    args = launch_command_parser().parse_args(
        ["--config_file", str(ACCELERATE_CONFIGS / f"{name}.yaml"), "-m", "lmadapt", "sft", "c.yaml"]
    )
    args, _, _ = _validate_launch_command(args)
    for key, value in prepare_multi_gpu_env(args).items():
        monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert plugin.state_dict_type == StateDictType.SHARDED_STATE_DICT
    assert plugin.auto_wrap_policy is not None and plugin.reshard_after_forward is True
    assert args.mixed_precision == "bf16"
    assert (args.num_machines, args.num_processes) == ((2, 16) if "multinode" in name else (1, 8))


@pytest.mark.parametrize("name", ["zero3", "zero3_multinode"])
def test_zero3_configs_partition_everything_and_gather_the_export(name):
    config = load_config_from_file(str(ACCELERATE_CONFIGS / f"{name}.yaml"))
    assert config.distributed_type == DistributedType.DEEPSPEED and config.mixed_precision == "bf16"
    ds = config.deepspeed_config
    assert ds["zero_stage"] == 3 and ds["zero3_save_16bit_model"] is True
    assert ds["gradient_accumulation_steps"] == 1  # lmadapt accumulates micro-batches itself
    assert (config.num_machines, config.num_processes) == ((2, 16) if "multinode" in name else (1, 8))
