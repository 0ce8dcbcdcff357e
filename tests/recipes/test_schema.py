from pathlib import Path

import pytest

from biomodal.errors import ConfigError
from biomodal.recipes.schema import SHIPPED_DIR, Recipe, apply_overrides, load_recipe


def test_shipped_recipes_parse():
    files = sorted(SHIPPED_DIR.rglob("*.yaml"))
    assert {"demo.yaml", "her2st.yaml"} <= {f.name for f in files}
    for f in files:
        rec = load_recipe(f)
        assert isinstance(rec, Recipe)
        if rec.data.family == "spatial":
            assert set(rec.modalities) >= {"histology", "expression"}


def test_shipped_name_resolves():
    assert load_recipe("spatial/demo").name == "spatial-demo"


def test_unknown_recipe_lists_shipped():
    with pytest.raises(ConfigError, match="spatial/demo"):
        load_recipe("spatial/nope")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"trainr": {}}, "Did you mean 'trainer'"),
        ({"data": {"tile_umm": 3}}, "Did you mean 'data.tile_um'"),
        ({"loss": {"nmae": "clip"}}, "Did you mean 'loss.name'"),
        ({"data": {"source": "visum"}}, "data.source"),
        ({"modalities": {"histolgy": {"encoder": "x"}, "expression": {"encoder": "mlp"}}}, "'histology'"),
        ({"data": {"tile_um": -1}}, "data.tile_um"),
    ],
)
def test_bad_keys_are_named(raw, expected):
    with pytest.raises(ConfigError) as exc:
        load_recipe(raw)
    assert expected in str(exc.value)


def test_nested_section_key_suggestion():
    raw = {
        "data": {
            "source": "legacy_st",
            "sections": [{"name": "a", "split": "train", "countz": "x"}, {"name": "b", "split": "test"}],
        }
    }
    with pytest.raises(ConfigError, match=r"data\.sections\.0\.counts"):
        load_recipe(raw)


def test_real_source_needs_train_and_test():
    raw = {"data": {"source": "legacy_st", "sections": [{"name": "a", "split": "train"}]}}
    with pytest.raises(ConfigError, match="split: test"):
        load_recipe(raw)


def test_overrides_parse_yaml_values():
    rec = load_recipe({}, overrides=["trainer.max_steps=5", "data.demo.small=true", "eval.ks=[1, 2]"])
    assert rec.trainer == {"max_steps": 5}
    assert rec.data.demo.small is True
    retrieval = next(p for p in rec.eval.protocols if p.name == "retrieval")
    assert retrieval.params["ks"] == [1, 2]  # the spatial shorthand eval.ks feeds the retrieval protocol
    with pytest.raises(ConfigError, match=r"key\.subkey=value"):
        apply_overrides({}, ["nonsense"])


def test_relative_paths_resolve_against_root(tmp_path: Path, monkeypatch):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "data:\n  source: legacy_st\n  root: sub\n  sections:\n"
        "    - {name: a, split: train, counts: a/c.tsv, spots: a/s.tsv, image: a/i.jpg}\n"
        "    - {name: b, split: test, counts: /abs/c.tsv, spots: b/s.tsv, image: b/i.jpg}\n"
        "trainer: {max_steps: 1}\n"
    )
    rec = load_recipe(recipe)
    assert rec.data.sections[0].counts == str((tmp_path / "sub" / "a" / "c.tsv").resolve())
    assert rec.data.sections[1].counts == "/abs/c.tsv"
    monkeypatch.setenv("BIOMODAL_DATA_DIR", str(tmp_path / "env"))
    recipe.write_text(recipe.read_text().replace("  root: sub\n", ""))
    rec = load_recipe(recipe)
    assert rec.data.sections[0].spots == str((tmp_path / "env" / "a" / "s.tsv").resolve())


def test_run_dir_uses_name():
    rec = load_recipe({"name": "x", "trainer": {"max_steps": 1}})
    assert rec.run_dir() == Path("runs/x")
    assert rec.run_dir("elsewhere") == Path("elsewhere")


def test_empty_or_comment_only_recipe_is_an_error(tmp_path: Path):
    for text in ("", "# only a comment\n"):
        path = tmp_path / "empty.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=r"empty\.yaml: the recipe is empty"):
            load_recipe(path)


def test_duplicate_yaml_keys_are_an_error(tmp_path: Path):
    path = tmp_path / "dup.yaml"
    path.write_text("trainer:\n  max_steps: 5\n  lr: 0.1\n  max_steps: 50\n")
    with pytest.raises(
        ConfigError, match=r"dup\.yaml.*duplicate key 'max_steps' \(line 4; first at line 2\)"
    ):
        load_recipe(path)


def test_a_recipe_without_trainer_steps_fails_at_load():
    with pytest.raises(ConfigError, match="max_steps"):
        load_recipe({"data": {"family": "spatial"}})


def test_unknown_encoder_or_loss_fails_before_any_data_are_read(tmp_path: Path):
    from biomodal.recipes import run

    bad_encoder = ["trainer.max_steps=2", "modalities.histology.encoder=cnn_smal"]
    with pytest.raises(ConfigError, match=r"modalities\.histology\.encoder.*Did you mean 'cnn_small'"):
        run("spatial/demo", overrides=bad_encoder, out=tmp_path / "a")
    with pytest.raises(ConfigError, match=r"loss\.name.*Did you mean 'clip'"):
        run("spatial/demo", overrides=["trainer.max_steps=2", "loss.name=clp"], out=tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # no demo data generated
