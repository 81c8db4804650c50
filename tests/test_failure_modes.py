"""What the commands leave when a write fails (a full disk, a file-size limit) or the user interrupts them:
the old file or the new one, never half of one, no temporary left, and one line naming the file."""

from __future__ import annotations

import errno
import importlib.abc
import io
import json
import resource
import runpy
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import torch

from dermai import data, ensemble, pixel_cache, safe_write
from dermai.cli import main
from dermai.config import RunConfig
from dermai.evaluate import write_outputs
from dermai.experiment import label_efficiency
from dermai.model import SimCLRResNet18
from dermai.train import Trainer, TrainingError, _atomic_torch_save, read_metrics, run_lock
from dermai.weights import load_weights, save_weights
from tests.conftest import ham_rows, make_folder

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
DISK_FULL = OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Python file write raises ENOSPC, as on a full disk (after the temporary was made)."""

    def full(self: Path, payload: object) -> int:
        raise DISK_FULL

    monkeypatch.setattr(Path, "write_bytes", full)
    monkeypatch.setattr(Path, "write_text", full)


@contextmanager
def one_megabyte_files() -> Iterator[None]:
    """A real OS limit on file size (RLIMIT_FSIZE): writes past 1 MB fail with EFBIG in any writer, Python's,
    torch's or safetensors' (Rust), as a full disk fails them. SIGXFSZ ignored, so the write returns the error."""
    previous_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, previous_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous_limit)
        signal.signal(signal.SIGXFSZ, previous_handler)


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path: Path, full_disk: None) -> None:
    """Python's error said "[Errno 28] No space left on device", naming no file."""
    target = tmp_path / "report.json"
    with open(target, "w") as handle:  # not Path.write_text: the fixture made it fail
        handle.write("old")
    with pytest.raises(OSError) as caught:
        safe_write.write_json_atomic(target, {"new": 1})
    assert str(caught.value) == (
        f"cannot write {target} (No space left on device); the file there before is kept as it was"
    )
    assert caught.value.errno == errno.ENOSPC
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_evaluate_outputs_on_a_full_disk_name_the_file_once(tmp_path: Path, full_disk: None) -> None:
    """The report and predictions are written in two nested atomic writes: the report's failed write was
    named as the predictions' (the inner one's), then wrapped again by the outer one."""
    report, predictions = tmp_path / "r.json", tmp_path / "p.csv"
    with pytest.raises(OSError) as caught:
        write_outputs({"auroc": 0.5}, pd.DataFrame({"image_id": ["a"]}), report, predictions)
    assert str(caught.value) == f"cannot write {report} (No space left on device)"
    assert list(tmp_path.iterdir()) == []


def test_evaluate_predictions_on_a_full_disk_are_named_and_the_report_is_not_renamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report, predictions = tmp_path / "r.json", tmp_path / "p.csv"
    real_write = Path.write_bytes

    def full_for_csv(self: Path, payload: bytes) -> int:
        if self.name.startswith(".p.csv."):
            raise DISK_FULL
        return real_write(self, payload)

    monkeypatch.setattr(Path, "write_bytes", full_for_csv)
    with pytest.raises(OSError) as caught:
        write_outputs({"auroc": 0.5}, pd.DataFrame({"image_id": ["a"]}), report, predictions)
    assert str(caught.value) == f"cannot write {predictions} (No space left on device)"
    assert list(tmp_path.iterdir()) == []


def test_weights_past_a_size_limit_name_the_file_and_keep_the_old_pair(tmp_path: Path) -> None:
    """safetensors' writer raised a SafetensorError (no OSError): the command printed a traceback."""
    target = tmp_path / "model.safetensors"
    torch.manual_seed(0)
    model = SimCLRResNet18(len(CLASSES))
    save_weights(model, target, {"classes": CLASSES, "image_size": 32, "temperature": 1.0})
    with one_megabyte_files(), pytest.raises(OSError) as caught:
        save_weights(model, target, {"classes": CLASSES, "image_size": 32, "temperature": 2.0})
    assert str(caught.value) == (f"cannot write {target} (File too large); the file there before is kept as it was")
    assert load_weights(target).meta["temperature"] == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]


def test_a_checkpoint_past_a_size_limit_names_the_file(tmp_path: Path) -> None:
    """torch.save's writer said only "[enforce fail at inline_container.cc] unexpected pos …"."""
    target = tmp_path / "checkpoints" / "last.pt"
    with one_megabyte_files(), pytest.raises(OSError, match=rf"^cannot write {target} \(File too large\)$"):
        _atomic_torch_save({"model": torch.zeros(1 << 19)}, target)
    assert list(target.parent.iterdir()) == []


def test_a_pixel_cache_on_a_full_disk_is_named_not_a_bus_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache was written through a memory map of a sparse file: on a full disk the process died of SIGBUS
    (no message) and left its temporary in the cache folder. Its blocks are now allocated first (here the
    allocation meets the full disk)."""

    def full(fd: int, offset: int, length: int) -> None:
        raise DISK_FULL

    monkeypatch.setattr("os.posix_fallocate", full)
    root = make_folder(tmp_path / "d", ham_rows(1, 1))
    paths = list(data.load_dataset(root).meta["path"])
    cache = tmp_path / "cache"
    with pytest.raises(OSError) as caught:
        pixel_cache.load_pixels(paths, 32, cache)
    message = str(caught.value)
    assert message.startswith(f"cannot write {cache}/pixels-") and "(No space left on device)" in message
    assert message.endswith("it is the pixel cache, whose folder $DERMAI_CACHE (or --cache-dir) sets")
    assert caught.value.errno == errno.ENOSPC and list(cache.iterdir()) == []


def train_argv(root: Path, out: Path, *extra: str) -> list[str]:
    """A tiny CLI training run (16 px, one epoch per stage)."""
    sizes = ["--image-size", "16", "--batch-size", "8", "--pretrain-epochs", "1", "--finetune-epochs", "1"]
    return ["train", "--data", str(root), "--out", str(out), *sizes, "--quiet", *extra]


def test_a_run_interrupted_before_its_first_checkpoint_says_how_to_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], one_torch_thread: None
) -> None:
    """Ctrl-C in the first epoch left config.json and manifest.csv but no checkpoint: the same command said
    "config.json: exists already … choose another --out folder" and --resume "nothing to resume (no
    config.json or checkpoints/last.pt)", though config.json was there; neither said what to do."""
    root, out = make_folder(tmp_path / "d", ham_rows(4, 2)), tmp_path / "run"

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_step", interrupted)
        assert main(train_argv(root, out)) == 130
    assert capsys.readouterr().err == "error: interrupted\n"
    assert {"config.json", "manifest.csv"} <= {p.name for p in out.iterdir()}
    assert not (out / "checkpoints" / "last.pt").exists()
    expected = (
        f"error: {out}: this run stopped before its first checkpoint (one is saved at the end of each epoch), so "
        "there is nothing to resume; delete the folder to train it again, or choose another --out folder\n"
    )
    for extra in ((), ("--resume",)):
        assert main(train_argv(root, out, *extra)) == 2
        assert capsys.readouterr().err == expected


def test_a_folder_with_other_files_is_still_refused_as_not_a_run(tmp_path: Path) -> None:
    """Only a folder holding nothing but what a new run writes first gets the "stopped before" advice."""
    run_config = json.dumps({"config": {}, "manifest_sha256": "0" * 64})
    for name, files in (
        ("notes", {"config.json": run_config, "manifest.csv": "", "notes.txt": "mine"}),
        ("own-config", {"config.json": '{"mine": 1}', "manifest.csv": ""}),
    ):
        out = tmp_path / name
        out.mkdir()
        for file, text in files.items():
            (out / file).write_text(text)
        with pytest.raises(TrainingError, match=rf"^{out / 'config.json'}: exists already"):
            Trainer(RunConfig(), out)
        with pytest.raises(TrainingError, match=rf"^{out}: nothing to resume \(no config.json"):
            Trainer(RunConfig(), out, resume=True)


def test_a_run_still_training_before_its_first_checkpoint_is_not_called_stopped(tmp_path: Path) -> None:
    """Advice to delete the folder of a trainer still working there would destroy its run."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"config": {}, "manifest_sha256": "0" * 64}))
    (out / "manifest.csv").write_text("")
    with run_lock(out):
        for resume in (False, True):
            with pytest.raises(TrainingError, match=rf"^{out}: another trainer \(pid \d+\) is running in this folder"):
                Trainer(RunConfig(), out, resume=resume)


def test_a_record_logged_after_a_torn_line_is_kept(tmp_path: Path) -> None:
    """A full disk or a kill mid-write leaves metrics.jsonl's last line torn; the next record (a resumed
    run's first) was glued onto it, and readers, which skip a line that is not JSON, lost both."""
    out = tmp_path / "run"
    out.mkdir()
    trainer = Trainer(RunConfig(), out)
    (out / "metrics.jsonl").write_text('{"kind": "step", "step": 1}\n{"kind": "st')
    trainer._log({"kind": "resume", "step": 2})
    assert [(r["kind"], r["step"]) for r in read_metrics(out)] == [("step", 1), ("resume", 2)]


def test_a_full_disk_while_logging_names_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The append bypassed the atomic writes: its error was "[Errno 28] No space left on device", no file."""
    out = tmp_path / "run"
    out.mkdir()

    class FullFile(io.BytesIO):
        def write(self, payload: object) -> int:
            raise DISK_FULL

    monkeypatch.setattr("builtins.open", lambda *args, **kwargs: FullFile())
    with pytest.raises(OSError) as caught:
        Trainer(RunConfig(), out)._log({"kind": "step"})
    assert str(caught.value) == f"cannot write {out / 'metrics.jsonl'} (No space left on device)"


def test_an_ensemble_interrupted_while_logging_its_status_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its last write, the "serving" and "status" records, came after the cleanup: an interrupt (or a full
    disk) there left a folder reading as an unfinished run, which the same command then refused as its --out."""
    out = tmp_path / "ens"

    def written(members: object, folder: Path, command: str, sizes: object) -> Path:
        for name in ("model.safetensors", "model.json", "config.json"):
            (folder / name).write_text("x")
        return folder / "model.safetensors"

    class InterruptedClock:  # Ctrl-C as the records are stamped, just before they are written
        @staticmethod
        def time() -> float:
            raise KeyboardInterrupt

    fitted = {"temperature": 1.0, "val_metrics": {"val_auroc": 0.7}}
    monkeypatch.setattr(ensemble, "_write_files", written)
    monkeypatch.setattr("dermai.serving.fit_serving", lambda *args, **kwargs: fitted)
    monkeypatch.setattr("dermai.serving.fit_context_if_possible", lambda *args, **kwargs: {"status": "skipped"})
    monkeypatch.setattr(ensemble, "time", InterruptedClock)
    with pytest.raises(KeyboardInterrupt):
        ensemble.build_ensemble(["a.safetensors", "b.safetensors"], out, "cmd")
    assert not out.exists()


def test_an_experiment_interrupted_in_a_runs_first_epoch_trains_it_again_on_a_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], one_torch_thread: None
) -> None:
    """The rerun stopped at "this run stopped before its first checkpoint …; delete that folder and rerun the
    experiment": a folder deep in its --out, which the experiment wrote itself and which held nothing trained."""
    base = RunConfig()
    base.data.data_dir = str(make_folder(tmp_path / "d", ham_rows(4, 2)))
    base.train.image_size, base.train.batch_size = 16, 8
    base.train.pretrain_epochs = base.train.finetune_epochs = 1
    out = tmp_path / "exp"

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(Trainer, "_step", interrupted)
        label_efficiency(base, out, fractions=(1.0,), seeds=1)
    pretrain = out / "seed0" / "pretrain"
    assert (pretrain / "config.json").exists() and not (pretrain / "checkpoints" / "last.pt").exists()
    capsys.readouterr()
    summary = label_efficiency(base, out, fractions=(1.0,), seeds=1)
    assert sorted(summary["init"]) == ["random", "simclr"]
    assert capsys.readouterr().err == f"note: {pretrain}: stopped before its first checkpoint; training it again\n"
    assert (pretrain / "model.safetensors").exists()


def test_ctrl_c_while_the_command_loads_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C in the first fraction of a second (numpy and pandas loading) printed an 18-line traceback."""

    class InterruptedImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, *args: object) -> None:
            if name == "dermai.cli":
                raise KeyboardInterrupt

    monkeypatch.delitem(sys.modules, "dermai.cli")
    monkeypatch.setattr(sys, "meta_path", [InterruptedImport(), *sys.meta_path])
    with pytest.raises(SystemExit) as exited:
        runpy.run_module("dermai", run_name="__main__")
    assert exited.value.code == 130 and capsys.readouterr().err == "error: interrupted\n"


def test_the_installed_command_says_one_line_for_ctrl_c_while_it_loads(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m dermai` handled it, but the installed `dermai` command's wrapper imported dermai.cli outside
    any handler, so Ctrl-C while it loaded still printed a traceback: its entry point is now `__main__.run`."""
    import importlib
    import tomllib

    scripts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["dermai"].partition(":")

    class InterruptedImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, *args: object) -> None:
            if name == "dermai.cli":
                raise KeyboardInterrupt

    entry = getattr(importlib.import_module(module), function)
    monkeypatch.delitem(sys.modules, "dermai.cli")
    monkeypatch.setattr(sys, "meta_path", [InterruptedImport(), *sys.meta_path])
    assert entry() == 130 and capsys.readouterr().err == "error: interrupted\n"
