//! AVX-512 with VNNI: the AVX-512 kernels, with the int8 products' multiply-adds fused
//! (`vpdpbusd` for bytes, `vpdpwssd` for the scaled i16 pairs).

pub use super::avx512::{
    axpy, dot, dot_row, gemm_panel, pv_accumulate, pv_t, scores_t, softmax_step, widen,
};
pub use super::avx512_int8::{dot_row_q_vnni as dot_row_q, dot_rows_q_vnni as dot_rows_q};
