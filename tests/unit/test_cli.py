"""Every `segr1` command turns bad input into one line on stderr naming the bad thing, exit status != 0, and no
traceback; `--debug` and internal errors keep the traceback. Calls `frontdoor.cli.main` in-process; no command
here gets far enough to start Ray or load a model."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from frontdoor.cli import describe_user_error, main
from segr1.config import ConfigError
from segr1.data.errors import DataError
from tests.unit.test_data_converters import put_gt, put_image

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "local_cpu.yaml")


def one_line_error(capsys, argv: list[str], *names: str, code: int = 2) -> str:
    """Run the CLI; check the exit status and that stderr is one line containing every one of `names`."""
    assert main(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def files(tmp_path) -> dict[str, str]:
    """A checkpoint folder, a good image, a corrupt image, a corrupt Parquet file, a malformed YAML."""
    (tmp_path / "ckpt").mkdir()
    put_image(tmp_path / "photo.png")
    (tmp_path / "corrupt.png").write_bytes(b"not a png")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 but not really")
    (tmp_path / "bad.yaml").write_text("run:\n  name: x\n steps: [\n")
    return {name: str(tmp_path / name) for name in ("ckpt", "photo.png", "corrupt.png", "bad.parquet",
                                                     "bad.yaml")} | {"missing": str(tmp_path / "missing")}


def refused_address() -> str:
    """host:port where nothing listens (a port just released), so a connection is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


# ---------------------------------------------------------------------------------------------- train
def test_train_bad_config_key(capsys):
    line = one_line_error(capsys, ["train", "--config", CONFIG, "algorithm.gruop_size=4"], "algorithm.gruop_size")
    assert line.startswith("segr1: config error: ")


def test_train_bad_config_value(capsys):
    one_line_error(capsys, ["train", "--config", CONFIG, "run.steps=many"], "run.steps", "many")


def test_train_missing_and_malformed_config_file(capsys, files):
    one_line_error(capsys, ["train", "--config", files["missing"]], "config file not found", files["missing"])
    one_line_error(capsys, ["train", "--config", files["bad.yaml"]], files["bad.yaml"], "line 3")


def test_train_missing_or_corrupt_dataset(capsys, files):
    one_line_error(capsys, ["train", "--config", CONFIG, f"data.train={files['missing']}"], "data.train",
                   files["missing"])
    line = one_line_error(capsys, ["train", "--config", CONFIG, f"data.eval={files['bad.parquet']}"],
                          files["bad.parquet"], "not a readable Parquet file")
    assert line.startswith("segr1: data error: ")


# ----------------------------------------------------------------------------------------- eval, predict
def test_eval_missing_checkpoint_and_bad_eval_data(capsys, files):
    one_line_error(capsys, ["eval", "--config", CONFIG, "--checkpoint", files["missing"],
                            f"data.eval={files['bad.parquet']}"], "--checkpoint", files["missing"])
    one_line_error(capsys, ["eval", "--config", CONFIG, "--checkpoint", files["ckpt"]], "data.eval")
    one_line_error(capsys, ["eval", "--config", CONFIG, "--checkpoint", files["ckpt"],
                            f"data.eval={files['bad.parquet']}"], files["bad.parquet"])


def test_eval_refuses_to_resume_a_log_of_another_eval_in_one_line(capsys, files, tmp_path):
    """Checked before Ray starts: rows of two evaluations never mix in one samples CSV."""
    from segr1.data.synth import synthesize
    from segr1.evaluation.sample_log import FIELDS

    data = synthesize(tmp_path / "eval.parquet", n=2, seed=0, size=32)
    (tmp_path / "eval_samples.csv").write_text(",".join(FIELDS) + "\n")
    (tmp_path / "eval_samples.meta.json").write_text('{"identity": {"checkpoint": "/elsewhere/step_9"}}')
    argv = ["eval", "--config", CONFIG, "--checkpoint", files["ckpt"], "--out", str(tmp_path / "eval.json"),
            f"data.eval={data}"]
    one_line_error(capsys, argv, "eval_samples.csv", "checkpoint='/elsewhere/step_9'", "--fresh")
    (tmp_path / "eval_samples.meta.json").unlink()
    one_line_error(capsys, argv, "eval_samples.meta.json", "--fresh")


def test_predict_missing_checkpoint_image_config_and_output_folder(capsys, files):
    args = ["predict", "--checkpoint", files["ckpt"], "--out", str(Path(files["ckpt"]) / "mask.png")]
    one_line_error(capsys, ["predict", "--checkpoint", files["missing"], "--image", files["photo.png"], "--out",
                            "m.png"], "--checkpoint", files["missing"])
    one_line_error(capsys, [*args, "--image", files["missing"]], "--image", files["missing"])
    one_line_error(capsys, [*args, "--image", files["corrupt.png"]], "--image", files["corrupt.png"])
    one_line_error(capsys, [*args, "--image", files["photo.png"], "--config", files["missing"]], "--config",
                   files["missing"])
    one_line_error(capsys, [*args, "--image", files["photo.png"], "--overlay", f"{files['missing']}/ov.png"],
                   "--overlay", files["missing"])


# ------------------------------------------------------------------------------------------------- data
def test_data_synth_bad_count_and_size(capsys, tmp_path):
    out = str(tmp_path / "s.parquet")
    one_line_error(capsys, ["data", "synth", "--out", out, "--n", "0"], "--n", "got 0")
    one_line_error(capsys, ["data", "synth", "--out", out, "--n", "2", "--size", "8"], "--size", "got 8")
    assert not Path(out).exists()


def test_data_convert_missing_folder_corrupt_image_and_bad_split(capsys, tmp_path):
    root = tmp_path / "COD10K-v3"
    put_image(root / "Test/Image/COD10K-CAM-1-A-1-B-1.jpg")
    put_gt(root / "Test/GT_Object/COD10K-CAM-1-A-1-B-1.png")
    out = str(tmp_path / "cod.parquet")
    line = one_line_error(capsys, ["data", "convert", "cod10k", "--root", str(root), "--out", out],
                          str(root / "Train" / "Image"), "missing folder")
    assert line.startswith("segr1: data error: ")
    (root / "Test/Image/COD10K-CAM-1-A-1-B-1.jpg").write_bytes(b"\xff\xd8 truncated")
    one_line_error(capsys, ["data", "convert", "cod10k", "--root", str(root), "--out", out, "--split", "test"],
                   str(root / "Test/Image/COD10K-CAM-1-A-1-B-1.jpg"), "undecodable image bytes")
    one_line_error(capsys, ["data", "convert", "nc4k", "--root", str(root), "--out", out, "--split", "train"],
                   "split", "'train'")
    one_line_error(capsys, ["data", "convert", "nc4k", "--root", str(tmp_path / "nowhere"), "--out", out],
                   str(tmp_path / "nowhere"), "missing folder")


def test_data_convert_skip_bad_reports_and_lists_the_skipped(capsys, tmp_path):
    from tests.unit.test_data_convert_skip_bad import cod10k_with_two_bad_samples, read_list

    fixture = cod10k_with_two_bad_samples(tmp_path / "COD10K-v3")
    out = tmp_path / "cod.parquet"
    assert main(["data", "convert", "cod10k", "--root", str(tmp_path / "COD10K-v3"), "--out", str(out),
                 "--skip-bad"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote 2 rows to {out}" in printed
    assert f"bad samples skipped: 2, listed in {out}.skipped.csv" in printed
    listed = read_list(out)
    assert [path for path, _ in listed[1:]] == [str(fixture["corrupt"]), str(fixture["mismatched"])]


# ------------------------------------------------------------------------------------ scale, stop, status
@pytest.mark.parametrize("command", [["scale", "--rollout", "2"], ["stop"], ["status"]])
def test_cluster_commands_without_a_cluster(capsys, monkeypatch, command):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    address = refused_address()
    one_line_error(capsys, [command[0], "--run", "nosuchrun", "--address", address, *command[1:]], address,
                   "no Ray cluster answers at")
    monkeypatch.setenv("RAY_ADDRESS", address)  # "auto" means RAY_ADDRESS when it is set, as in Ray
    one_line_error(capsys, [command[0], "--run", "nosuchrun", *command[1:]], "--address auto",
                   f":{address.rpartition(':')[2]} ")  # the port (Ray resolves localhost to the node IP)
    monkeypatch.delenv("RAY_ADDRESS")
    one_line_error(capsys, [command[0], "--run", "nosuchrun", "--address", "nonsense", *command[1:]],
                   "--address", "'nonsense'")


def test_scale_without_sizes(capsys):
    one_line_error(capsys, ["scale", "--run", "r"], "--rollout", "--reward")


def test_a_services_refusal_is_one_line(capsys, monkeypatch):
    """The services refuse with SystemExit("...") (e.g. no job of that name): one line, exit status 1."""
    import cluster.job_control
    import frontdoor.cli

    def no_such_run(run_name, address):
        raise SystemExit(f"no running job named {run_name!r} on the Ray cluster at {address!r}")

    monkeypatch.setattr(frontdoor.cli, "_connect_ray", lambda address: None)
    monkeypatch.setattr(cluster.job_control, "request_stop", no_such_run)
    one_line_error(capsys, ["stop", "--run", "ghost"], "no running job named 'ghost'", code=1)


def test_a_run_that_failed_for_good_ends_with_one_line_naming_stage_actor_and_step(capsys, monkeypatch):
    """A StageError raised in the job's controller actor (retries or learner restarts spent): one line, status 1."""
    from ray.exceptions import RayTaskError

    import cluster.job
    from segr1.faults import StageError

    def hung(cfg):
        error = StageError("generate", "rollout-3", "generate did not return within rollout.timeout_s=5s", 17)
        raise RayTaskError("ControllerActor.run", "Traceback (most recent call last):\n  ...", error)\
            .as_instanceof_cause()

    monkeypatch.setattr(cluster.job, "train", hung)
    line = one_line_error(capsys, ["train", "--config", CONFIG], code=1)
    assert line == ("segr1: run failed: stage generate failed on rollout-3 at step 17: generate did not return "
                    "within rollout.timeout_s=5s")


# --------------------------------------------------------------------------------------- debug and bugs
def test_debug_keeps_the_traceback(capsys):
    with pytest.raises(ConfigError, match="algorithm.gruop_size"):
        main(["--debug", "train", "--config", CONFIG, "algorithm.gruop_size=4"])


def test_an_internal_error_is_not_swallowed(monkeypatch, tmp_path):
    import segr1.data.convert

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(segr1.data.convert, "convert", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["data", "convert", "nc4k", "--root", str(tmp_path), "--out", str(tmp_path / "x.parquet")])


def test_a_user_error_raised_inside_a_ray_task_is_described_by_its_cause():
    from ray.exceptions import RayTaskError

    remote = RayTaskError("load", "Traceback (most recent call last):\n  ...", DataError("x.parquet", "bad", row=3))
    assert describe_user_error(remote.as_instanceof_cause()) == "data error: x.parquet, row 3: bad"
    assert describe_user_error(RayTaskError("load", "tb", RuntimeError("bug"))) is None
    assert describe_user_error(FileNotFoundError(2, "No such file or directory", "/a b/c")) == \
        "error: /a b/c: No such file or directory"
