// Includes' hash value: 1d3fe5c806f820898ddd4baec440d3fb

#include <deep_gemm/impls/sm90_fp8_gemm_1d2d.cuh>

using namespace deep_gemm;

static void __instantiate_kernel() {
    auto ptr = reinterpret_cast<void*>(&sm90_fp8_gemm_1d2d_impl<
        cute::UMMA::Major::K,
        0, 4096, 7168,
        8,
        128, 192, 128,
        128, 128, 128,
        4,
        128, 256,
        2, false,
        132, GemmType::MGroupedContiguous,
        epilogue::transform::EpilogueIdentity
    >);
};
