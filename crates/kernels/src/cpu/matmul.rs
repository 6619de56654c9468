//! Matrix products over stored weights. A row is widened once and used for every token.

use crate::matrix::Matrix;

/// Eight independent partial sums: keeps the f32 error low and lets the compiler vectorise.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    // chunks_exact keeps bounds checks out of the loop so it vectorises
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut tail = 0f32;
    for (x, y) in a
        .chunks_exact(8)
        .remainder()
        .iter()
        .zip(b.chunks_exact(8).remainder())
    {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

pub fn matmul(x: &[f32], w: &Matrix, y: &mut [f32]) {
    let n = x.len() / w.cols;
    debug_assert_eq!(x.len(), n * w.cols);
    debug_assert_eq!(y.len(), n * w.rows);
    let mut row = vec![0f32; w.cols];
    for r in 0..w.rows {
        w.read_row(r, &mut row);
        for t in 0..n {
            y[t * w.rows + r] = dot(&x[t * w.cols..(t + 1) * w.cols], &row);
        }
    }
}

pub fn matmul_t(x: &[f32], w: &Matrix, y: &mut [f32]) {
    let n = x.len() / w.rows;
    debug_assert_eq!(x.len(), n * w.rows);
    debug_assert_eq!(y.len(), n * w.cols);
    y.fill(0.0);
    let mut row = vec![0f32; w.cols];
    for r in 0..w.rows {
        w.read_row(r, &mut row);
        for t in 0..n {
            let s = x[t * w.rows + r];
            for (o, &v) in y[t * w.cols..(t + 1) * w.cols].iter_mut().zip(&row) {
                *o += s * v;
            }
        }
    }
}
