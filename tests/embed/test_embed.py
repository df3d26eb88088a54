"""Stage `embed` for real in a temporary working directory: params.yaml, data/qa in,
data/embeddings out, with the offline model of the cpu preset."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

import embedtune.embed.__main__ as embed
from embedtune import io
from embedtune.embeddings import BlockStore, embed_dataset, load_embeddings
from embedtune.stage import run_stage
from tests.helpers import cfg
from tests.helpers.embeddings import DATASET

TRAIN = {
    "queries": {"q-with": "How do I open a file and close it for sure?"},
    "corpus": {
        "c-with": "The with statement wraps a block with methods of a context manager.",
        "c-del": "Deletion of a name removes its binding from the namespace.",
    },
    "relevant_docs": {"q-with": ["c-with"]},
    "mode": "text",
}


def write_params(folder, **embed_updates) -> None:
    embed_section = cfg("embed", **embed_updates).model_dump()
    (folder / "params.yaml").write_text(yaml.safe_dump({"seed": 0, "embed": embed_section}))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(io.CACHE_ENV, str(tmp_path / "cache"))
    io.QA_DIR.mkdir(parents=True)
    (io.QA_DIR / "train.json").write_text(json.dumps(TRAIN))
    (io.QA_DIR / "validation.json").write_text(json.dumps(DATASET))
    return tmp_path


def test_stage_embeds_every_split(workdir, minilm, capsys):
    write_params(workdir, batch_size=2)
    embed.main()

    files = sorted(p.name for p in (workdir / io.EMBEDDINGS_DIR).iterdir())
    assert files == ["train.safetensors", "validation.safetensors"]
    for split, dataset in (("train", TRAIN), ("validation", DATASET)):
        saved = load_embeddings(io.EMBEDDINGS_DIR / f"{split}.safetensors")
        assert saved.query_ids == list(dataset["queries"])
        assert saved.corpus_ids == list(dataset["corpus"])
        assert saved.queries.dtype == saved.corpus.dtype == torch.float32
        for rows in (saved.queries, saved.corpus):
            assert torch.allclose(rows.norm(dim=1), torch.ones(len(rows)), atol=1e-5)
        expected = embed_dataset(minilm, dataset, cfg("embed"))  # the session's own model
        assert torch.allclose(saved.queries, expected.queries, atol=1e-5)
        assert torch.allclose(saved.corpus, expected.corpus, atol=1e-5)
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if not line.startswith("embed ")] == [
        "train          1 queries,     2 chunks, dim 384",
        "validation     3 queries,     4 chunks, dim 384",
    ]
    # stdout is no terminal here: one progress line per split, at its end
    assert [line.split(",")[0] for line in out if line.startswith("embed ")] == [
        "embed train: 3/3 texts",
        "embed validation: 7/7 texts",
    ]


def test_stage_uses_the_prefixes_of_params_and_only_its_sections(workdir, minilm):
    params = {
        "seed": 0,
        "embed": cfg("embed", query_prefix="query: ").model_dump(),
        "train": {"lr": "fast"},  # another stage's section, broken: not the embed stage's business
    }
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    embed.main()
    saved = load_embeddings(io.EMBEDDINGS_DIR / "validation.safetensors")
    plain = embed_dataset(minilm, DATASET, cfg("embed"))
    prefixed = embed_dataset(minilm, DATASET, cfg("embed", query_prefix="query: "))
    assert torch.allclose(saved.queries, prefixed.queries, atol=1e-5)
    assert not torch.allclose(saved.queries, plain.queries, atol=1e-3)
    assert torch.allclose(saved.corpus, plain.corpus, atol=1e-5)


def test_stage_without_qa_data_fails_with_one_line(workdir, capsys):
    write_params(workdir)
    (io.QA_DIR / "validation.json").unlink()
    with pytest.raises(SystemExit) as info:
        run_stage("embed", embed.main)
    assert info.value.code == 2
    # one line, before the model is loaded and before any split is written
    assert capsys.readouterr().err == (
        "embedtune embed: error: data/qa/validation.json not found: run `dvc repro synth` first\n"
    )
    assert not (workdir / io.EMBEDDINGS_DIR).exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p["embed"].pop("dtype"), r"missing key embed\.dtype"),
        (lambda p: p["embed"].update(batch_size=0), r"embed\.batch_size must be greater than 0"),
        (lambda p: p["embed"].update(pooling="mean"), r"unknown key embed\.pooling"),
        (lambda p: p.pop("embed"), r"missing key embed "),
    ],
)
def test_stage_with_bad_params_fails_with_one_line(workdir, capsys, edit, message):
    params = {"seed": 0, "embed": cfg("embed").model_dump()}
    edit(params)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SystemExit) as info:
        run_stage("embed", embed.main)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("embedtune embed: error: params.yaml: ")
    assert err.count("\n") == 1
    assert re.search(message, err)


class Killed(Exception):
    """Stands for SIGKILL: the stage stops in the middle of its work."""


class Encoder:
    """The real model, counting its `encode` calls; with `dies_at`, that call never returns."""

    def __init__(self, model, dies_at: int | None = None):
        self.model, self.dies_at, self.calls = model, dies_at, 0

    def encode(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.dies_at:
            raise Killed
        return self.model.encode(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.model, name)


def saved_rows() -> dict[str, torch.Tensor]:
    rows = {}
    for split in io.SPLITS:
        emb = load_embeddings(io.EMBEDDINGS_DIR / f"{split}.safetensors")
        rows |= {f"{split}/queries": emb.queries, f"{split}/corpus": emb.corpus}
    return rows


def test_a_killed_embed_resumes_from_the_blocks_it_wrote(workdir, minilm, monkeypatch, capsys):
    write_params(workdir, batch_size=2)
    monkeypatch.setattr(BlockStore, "BLOCK_TEXTS", 2)  # 6 blocks: train 1 + 1, validation 2 + 2
    embed.main()
    clean = saved_rows()
    assert not list(workdir.glob("cache/embed-resume/*/*"))  # a finished run leaves none
    capsys.readouterr()

    io.EMBEDDINGS_DIR.joinpath("train.safetensors").unlink()
    io.EMBEDDINGS_DIR.joinpath("validation.safetensors").unlink()
    dying = Encoder(minilm, dies_at=4)
    monkeypatch.setattr(embed, "load_encoder", lambda cfg: dying)
    with pytest.raises(Killed):
        embed.main()
    (folder,) = (workdir / "cache/embed-resume").iterdir()
    assert len(list(folder.glob("*.safetensors"))) == 3

    again = Encoder(minilm)
    monkeypatch.setattr(embed, "load_encoder", lambda cfg: again)
    embed.main()
    assert again.calls == 6 - 3  # only the blocks the killed run had not written
    assert "resumed: 3 blocks read back from" in capsys.readouterr().out
    resumed = saved_rows()
    assert all(torch.equal(resumed[name], clean[name]) for name in clean)
    assert not folder.exists()


def test_a_damaged_block_is_encoded_again(tmp_path, minilm):
    texts = list(DATASET["corpus"].values())
    first = BlockStore(minilm, 2, tmp_path)
    rows = first.embed(texts, "")
    (block,) = tmp_path.iterdir()
    block.write_bytes(block.read_bytes()[:40])  # half-written
    again = BlockStore(Encoder(minilm), 2, tmp_path)
    assert torch.equal(again.embed(texts, ""), rows)
    assert (again.reused, again.encoder.calls) == (0, 1)
    assert BlockStore(None, 2, tmp_path).embed(texts, "").equal(rows)  # whole again: no encoder


def test_embed_devices_encode_with_a_pool_of_two_cpu_processes(
    workdir, minilm, tmp_path, monkeypatch
):
    write_params(workdir, batch_size=2)
    embed.main()
    single = saved_rows()
    # the temporary folder of this process and those it starts: a short path, as a socket's
    # path (in it, two folders down) is at most 107 bytes
    temporary = Path(tempfile.mkdtemp(prefix="embedtune-test-"))
    monkeypatch.setenv("TMPDIR", str(temporary))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    write_params(workdir, batch_size=2, devices=["cpu", "cpu"])
    embed.main()
    pooled = saved_rows()
    assert all(torch.allclose(pooled[name], single[name], atol=1e-5) for name in single)
    left = sorted(p.name for p in temporary.iterdir())
    shutil.rmtree(temporary)
    assert left == []  # the pool's processes left nothing behind
    assert os.environ["TMPDIR"] == str(temporary)
