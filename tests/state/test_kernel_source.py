"""kernel.cu parsing, on sources sgl-deep-gemm 0.1.2 generated on the H200 and on 0.2.3.post2's
generator formats (tests/data/kernels)."""

import json
from pathlib import Path

import pytest

from tasks.state import kernel_source

DATA = Path(__file__).resolve().parents[1] / "data" / "kernels"
BUILT = json.loads((DATA / "0.1.x" / "shapes.json").read_text())
GROUPED = ("GROUPED_GEMM_NT_F8F8BF16_CONTIG", "GROUPED_GEMM_NT_F8F8BF16_MASKED", "GROUPED_GEMM_NT_BF16_CONTIG",
           "GROUPED_GEMM_NT_BF16_MASKED")


@pytest.mark.parametrize("name", sorted(BUILT))
def test_every_real_0_1_entry_reads_as_what_built_it(name):
    built, got = BUILT[name], kernel_source.read(DATA / "0.1.x" / name)
    if name.startswith("kernel.transpose_fp32."):
        assert got.function == "transpose_fp32" and got.shape is None and "not a GEMM" in got.note
    elif built["kind"] in GROUPED:
        assert got.shape == (built["kind"], built["n"], built["k"], built["groups"]), got
        assert got.note == ""
    else:  # normal GEMMs: the kernel is built for any N and K
        assert got.kind == built["kind"] and (got.n, got.k) == (None, None) and got.shape is None
        assert "runtime arguments" in got.note


def test_the_real_entries_cover_every_kind_but_block32():
    kinds = {kernel_source.read(DATA / "0.1.x" / name).kind for name in BUILT}
    assert kinds == {*GROUPED, "GEMM_NT_F8F8BF16", "GEMM_NT_BF16BF16F32", None}


def _formats() -> dict[str, str]:
    text = (DATA / "0.2.x" / "formats.txt").read_text()
    sections = [s for s in text.split("@@ ")[1:]]
    return {s.split("\n", 1)[0]: s.split("\n", 1)[1] for s in sections}


def _render(fmt: str, values: list[str]) -> str:
    assert fmt.count("{}") == len(values)
    return fmt.format(*values)


def test_0_2_fp8_sources_read_through_the_generator_format():
    fmt = _formats()["sm90_fp8_gemm_1d2d"]
    rest = ["128", "192", "128", "128", "128", "128", "4", "128", "256", "2", "false", "132",
            "GemmType::MGroupedMasked", "false", "epilogue::transform::EpilogueIdentity", "cutlass::bfloat16_t"]
    got = kernel_source.parse(_render(fmt, ["cute::UMMA::Major::K", "0", "4096", "7168", "32", *rest]))
    assert got.function == "sm90_fp8_gemm_1d2d_impl"
    assert got.shape == ("GROUPED_GEMM_NT_F8F8BF16_MASKED", 4096, 7168, 32)
    normal = [r.replace("GemmType::MGroupedMasked", "GemmType::Normal") for r in rest]
    got = kernel_source.parse(_render(fmt, ["cute::UMMA::Major::K", "0", "0", "0", "1", *normal]))
    assert got.kind == "GEMM_NT_F8F8BF16" and got.shape is None and "runtime" in got.note


def test_0_2_bf16_sources_read_through_the_generator_format():
    fmt = _formats()["sm90_bf16_gemm"]
    head = ["cute::UMMA::Major::K", "cute::UMMA::Major::K"]
    tail = ["128", "96", "64", "128", "128", "64", "7", "128", "256", "1", "false", "132",
            "GemmType::MGroupedContiguous", "false"]
    got = kernel_source.parse(_render(fmt, [*head, "0", "3072", "1024", "4", *tail, "cutlass::bfloat16_t"]))
    assert got.shape == ("GROUPED_GEMM_NT_BF16_CONTIG", 3072, 1024, 4)
    normal = [t.replace("MGroupedContiguous", "Normal") for t in tail]
    assert kernel_source.parse(_render(fmt, [*head, "0", "0", "0", "1", *normal, "float"])).kind == \
        "GEMM_NT_BF16BF16F32"
    # BF16 output from a normal bf16 GEMM is not a type sglang warms.
    other = kernel_source.parse(_render(fmt, [*head, "0", "0", "0", "1", *normal, "cutlass::bfloat16_t"]))
    assert other.kind is None and "not one of sglang's warmup types" in other.note


@pytest.mark.parametrize("text, note", [
    ("", "no kernel instantiation"),
    ("int main() { return 0; }", "no kernel instantiation"),
    ("auto ptr = reinterpret_cast<void*>(&sm90_fp8_gemm_1d2d_impl<GemmType::Normal, x, y>);",
     "not laid out as expected"),
    ("auto ptr = reinterpret_cast<void*>(&sm90_layout_kernel<1, 2, 3>);", "not a GEMM"),
    ("auto ptr = reinterpret_cast<void*>(&sm90_fp8_mqa_logits<kHeads, 2>);", "not laid out as expected"),
    ("auto ptr = reinterpret_cast<void*>(&sm90_fp8_mqa_logits<64>);", "not laid out as expected"),
])
def test_sources_it_cannot_read_say_why(text, note):
    got = kernel_source.parse(text)
    assert got.shape is None and note in got.note


def test_a_missing_source_is_a_note_not_an_error(tmp_path):
    got = kernel_source.read(tmp_path / "kernel.x.0")
    assert got.shape is None and "unreadable" in got.note


# The DSA indexer's kernels, in the layout of sgl-deep-gemm 0.1.2's format strings (its _C.so:
# "sm{}_fp8_paged_mqa_logits<{}, {}, {}, {}, ...>", "sm{}_fp8_mqa_logits<{}, {}, ...>",
# "sched::smxx_paged_mqa_logits_metadata<{}, {}, {}, {}>"): the first template arguments are
# (next_n, heads, head dim) and (heads, head dim).
@pytest.mark.parametrize("text, shape", [
    ("auto ptr = reinterpret_cast<void*>(&sm90_fp8_paged_mqa_logits<\n 1, 64,\n 128, 64,\n true, false,\n"
     " 3, 3,\n 256,\n 128, 512,\n float\n>);", ("FP8_PAGED_MQA_LOGITS", 64, 128, 1)),
    ("auto ptr = reinterpret_cast<void*>(&sm90_fp8_paged_mqa_logits<2, 32, 128, 64, true, false, 3, 3, 256, "
     "128, 512, float>);", ("FP8_PAGED_MQA_LOGITS", 32, 128, 2)),
    ("auto ptr = reinterpret_cast<void*>(&sm90_fp8_mqa_logits<32, 128, false, 4, 256, 3, 3, 132, 128, 512, "
     "float>);", ("FP8_MQA_LOGITS", 32, 128, 1)),
])
def test_indexer_kernels_name_their_heads_and_head_dim(text, shape):
    assert kernel_source.parse(text).shape == shape


def test_the_indexer_schedule_kernel_has_no_heads_and_says_so():
    got = kernel_source.parse("auto ptr = reinterpret_cast<void*>(&sched::smxx_paged_mqa_logits_metadata<\n"
                              "  64, 256, 132, false\n>);")
    assert got.shape is None and got.kind == "FP8_PAGED_MQA_LOGITS" and "schedule" in got.note


def test_a_guess_of_nvcc_time_puts_big_gemm_tiles_first_and_small_kernels_last():
    def guess(name):
        return kernel_source.guess_seconds((DATA / "0.1.x" / name / "kernel.cu").read_text())

    big = guess("kernel.sm90_fp8_gemm_1d2d.a8110cf7ebad257c8d23518a9e171183")  # 128 x 192 tiles
    small = guess("kernel.sm90_fp8_gemm_1d2d.7060370a1ee10ed4bfd3097fdd123700")  # 16 x 16
    bf16 = guess("kernel.sm90_bf16_m_grouped_gemm_masked.4db672e4f128fb5de7c37877c7ac12cb")  # 128 x 96
    transpose = guess("kernel.transpose_fp32.3f2682682f194fd4b3cf2b5d9bdc431d")
    assert big > bf16 > small > transpose == 1.0
    assert 5 < big < 6 and 1.5 < small < 2  # seconds, as on the H100
    assert kernel_source.guess_seconds("no kernel here") == 1.0
