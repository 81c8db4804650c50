"""scripts/device_tree.sh, in a scratch git repository: prepare moves the weights aside and packs the data into one
archive in an ignored folder within the device tool's 64 MiB, restore puts the weights back; misuse is refused by
name."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "device_tree.sh"


def packed(repo: Path) -> dict[str, bytes]:
    """The files in .gpu_data/ham10000.tgz, by their path inside it."""
    with tarfile.open(repo / ".gpu_data" / "ham10000.tgz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def run(repo: Path, verb: str, data: Path, *more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(repo / "scripts" / "device_tree.sh"), verb, *more],
        env={**os.environ, "DERMAI_DATA": str(data)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_prepare_and_restore(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "weights").mkdir()
    shutil.copy(SCRIPT, repo / "scripts" / "device_tree.sh")
    (repo / "weights" / "model.safetensors").write_bytes(b"w" * 5000)
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    data = tmp_path / "ham"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    (data / "images" / "ISIC_0000001.jpg").write_bytes(b"j" * 3000)
    (data / "masks" / "ISIC_0000001_segmentation.png").write_bytes(b"m" * 3000)
    (data / "HAM10000_metadata.csv").write_text("image_id,dx\nISIC_0000001,nv\n")

    done = run(repo, "prepare", data)
    assert done.returncode == 0, done.stderr
    assert "the call will send 0 MiB of 64" in done.stdout
    files = packed(repo)
    assert files["images/ISIC_0000001.jpg"] == b"j" * 3000
    assert set(files) == {"images/ISIC_0000001.jpg", "HAM10000_metadata.csv"}  # no masks without --masks
    assert [p.name for p in (repo / ".gpu_data").iterdir()] == ["ham10000.tgz"]
    assert not (repo / "weights" / "model.safetensors").exists()
    assert git(repo, "status", "--short") == " D weights/model.safetensors\n"  # the data folder is ignored
    again = run(repo, "prepare", data)
    assert again.returncode == 2 and "an earlier prepare was not restored" in again.stderr

    done = run(repo, "restore", data)
    assert done.returncode == 0 and "restored" in done.stdout
    assert (repo / "weights" / "model.safetensors").read_bytes() == b"w" * 5000
    assert git(repo, "status", "--short") == ""
    assert "nothing to restore" in run(repo, "restore", data).stdout

    with open(repo / "big.bin", "wb") as big:  # untracked, not ignored: a call would send it
        big.truncate(70 * 2**20)
    over = run(repo, "prepare", data)
    assert over.returncode == 1 and "over the limit" in over.stderr
    assert run(repo, "restore", data).returncode == 0
    missing = run(repo, "prepare", tmp_path / "nowhere")
    assert missing.returncode == 2 and f"{tmp_path / 'nowhere'}: no HAM10000_metadata.csv" in missing.stderr
    assert run(repo, "sideways", data).returncode == 2


def test_prepare_with_masks_copies_them_and_a_plain_prepare_drops_them(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "scripts" / "device_tree.sh")
    git(repo, "init", "-q")
    data = tmp_path / "ham"
    (data / "images").mkdir(parents=True)
    (data / "images" / "ISIC_0000001.jpg").write_bytes(b"j" * 3000)
    (data / "HAM10000_metadata.csv").write_text("image_id,dx\nISIC_0000001,nv\n")

    no_masks = run(repo, "prepare", data, "--masks")
    assert no_masks.returncode == 2 and f"{data}: no masks/ there" in no_masks.stderr
    (data / "masks").mkdir()
    (data / "masks" / "ISIC_0000001_segmentation.png").write_bytes(b"m" * 3000)
    done = run(repo, "prepare", data, "--masks")
    assert done.returncode == 0, done.stderr
    assert packed(repo)["masks/ISIC_0000001_segmentation.png"] == b"m" * 3000
    plain = run(repo, "prepare", data)
    assert plain.returncode == 0 and "masks/ISIC_0000001_segmentation.png" not in packed(repo)
    wrong = run(repo, "prepare", data, "--mask")
    assert wrong.returncode == 2 and "prepare takes --masks or nothing, not '--mask'" in wrong.stderr


def test_many_small_files_count_with_their_tar_overhead(tmp_path: Path) -> None:
    """The tool counts a file as a tar does (header and padding): 3,000 files of 10 bytes send over 2 MiB, not 30 KB."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "scripts" / "device_tree.sh")
    (repo / "many").mkdir()
    for i in range(3000):
        (repo / "many" / f"{i}.txt").write_bytes(b"x" * 10)
    git(repo, "init", "-q")
    data = tmp_path / "ham"
    (data / "images").mkdir(parents=True)
    (data / "HAM10000_metadata.csv").write_text("image_id,dx\n")
    done = run(repo, "prepare", data)
    assert done.returncode == 0 and "the call will send 2 MiB of 64" in done.stdout
