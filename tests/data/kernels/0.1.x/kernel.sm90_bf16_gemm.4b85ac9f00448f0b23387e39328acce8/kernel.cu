// Includes' hash value: fd1d9474fedb11de3319703e1de2345e

#include <deep_gemm/impls/sm90_bf16_gemm.cuh>

using namespace deep_gemm;

static void __instantiate_kernel() {
    auto ptr = reinterpret_cast<void*>(&sm90_bf16_gemm_impl<
        cute::UMMA::Major::K, cute::UMMA::Major::K,
        0, 0, 0,
        1,
        64, 128, 64,
        128, 128, 0,
        8,
        128, 128,
        1, false,
        132,
        GemmType::Normal, false,
        float
    >);
};
