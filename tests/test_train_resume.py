import torch
from helpers import logged_steps
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pixperfect.training.train import train


def test_training_writes_checkpoint_config_and_tensorboard_in_a_named_run_dir(tiny_config):
    cfg = tiny_config("run.name=named")
    directory = train(cfg)
    assert directory.name == "named"
    assert (directory / "checkpoints" / "last.ckpt").is_file()
    assert (directory / "config.yaml").read_text().count("max_steps: 2") == 1
    events = list((directory / "tb").glob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0]), size_guidance={"images": 0})
    acc.Reload()
    assert "train/images" in acc.Tags()["images"]  # the grid logged at step 1


def test_rerunning_the_same_command_resumes_and_continues_the_step_count(tiny_config):
    directory = train(tiny_config("trainer.max_steps=3"))
    first = torch.load(directory / "checkpoints" / "last.ckpt", weights_only=False)
    assert first["global_step"] == 3

    train(tiny_config("trainer.max_steps=6"))
    second = torch.load(directory / "checkpoints" / "last.ckpt", weights_only=False)
    assert second["global_step"] == 6

    # The second launch logged only steps 3..5: it continued, it did not start over.
    files = sorted(
        (directory / "tb").glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime
    )
    assert len(files) == 2
    assert logged_steps(files[0]) == [0, 1, 2]
    assert logged_steps(files[1]) == [3, 4, 5]
    # ... and with the optimiser state of the first run, not a fresh one.
    adam_steps = {float(s["step"]) for s in second["optimizer_states"][0]["state"].values()}
    assert adam_steps == {6.0}
