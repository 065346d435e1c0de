"""Kernel locks (tasks/state/kernel_lock.py): one-line errors naming the file and field, only
locks of the same key parts used, and recipes that find another install's headers."""

from __future__ import annotations

import json

import pytest

from tasks.state import kernel_lock, recipes

PARTS = {"deep_gemm.version": "0.2.3.post2", "nvcc": "13.0.88", "gpu.arch": "9.0", "gpu.sms": "132"}


def lock_text(parts: dict = PARTS, shapes: dict | None = None, **over) -> str:
    data = {"schema": 1, "variants": [{"key_parts": parts, "shapes": shapes or {"s1": {"fam.1": "r1"}}}],
            "recipes": {"r1": {"source": "// k\n", "argv": ["@SRC@", "--include-path", "@DEEP_GEMM@/include",
                                                           "--output-file", "@OUT@"], "seconds": 4.5}}}
    return json.dumps({**data, **over})


@pytest.mark.parametrize("text, says", [
    ("{not json", "not JSON"),
    (lock_text(schema=2), "schema: expected 1, got 2"),
    (lock_text(shapes={"s1": {"fam.1": 7}}), "variants[0].shapes.s1.fam.1: expected a recipe key (text), got 7"),
    (lock_text(recipes={"r1": {"source": "x", "argv": "nvcc"}}), "recipes.r1: Expected `array`, got `str` - at `$.argv`"),
    (lock_text(parts=[]), "Expected `object`, got `array` - at `$.variants[0].key_parts`"),
    (lock_text(variants={}), "variants: expected a list, got dict"),
    (lock_text(shapes={"s1": {"fam.1": "r9"}}), "variants[0].shapes.s1.fam.1: recipe 'r9' is not in recipes"),
])
def test_a_bad_lock_is_one_line_naming_its_file_and_field(tmp_path, text, says):
    path = tmp_path / "v3.kernels.json"
    path.write_text(text)
    with pytest.raises(kernel_lock.LockError) as info:
        kernel_lock.read(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and says in message and "\n" not in message


def test_only_variants_of_the_same_key_parts_are_used_the_rest_say_why(tmp_path):
    b200 = {**PARTS, "gpu.arch": "10.0", "gpu.sms": "148"}
    two = json.loads(lock_text())
    two["variants"].append({"key_parts": b200, "shapes": {"s2": {"fam.2": "r1"}}})
    (tmp_path / "a.kernels.json").write_text(json.dumps(two))
    (tmp_path / "b.kernels.json").write_text(lock_text(parts={**PARTS, "nvcc": "12.9.41"}))
    (tmp_path / "c.kernels.json").write_text("[]")
    found, problems = kernel_lock.matching(tmp_path, PARTS)
    assert [variant.shapes for _, variant in found] == [{"s1": {"fam.1": "r1"}}]
    assert [variant.shapes for _, variant in kernel_lock.matching(tmp_path, b200)[0]] == [{"s2": {"fam.2": "r1"}}]
    assert problems[0] == (f"{tmp_path / 'b.kernels.json'}: no variant taken where deep_gemm keys kernels as here "
                           "(nearest: nvcc '12.9.41' here '13.0.88')")
    assert problems[1].startswith(f"{tmp_path / 'c.kernels.json'}: ")


def test_a_materialized_recipe_names_this_installs_headers(tmp_path):
    lock = kernel_lock.read((tmp_path / "v3.kernels.json").write_text(lock_text()) and tmp_path / "v3.kernels.json")
    recipe = kernel_lock.materialize(lock, "r1", tmp_path / "recipes", "/opt/env/deep_gemm")
    assert recipe.seconds == 4.5 and (recipe.path / "kernel.cu").read_text() == "// k\n"
    assert recipes.read_argv(recipe.path) == ["@SRC@", "--include-path", "/opt/env/deep_gemm/include",
                                              "--output-file", "@OUT@"]
    # And back: a lock taken here names the install as the placeholder again.
    assert kernel_lock.locked_recipe(recipe.path, "/opt/env/deep_gemm").argv == lock.recipes["r1"].argv
    assert [p.name for p in (tmp_path / "recipes").iterdir()] == ["r1"]  # no scratch left
