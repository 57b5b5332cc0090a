//! Times `Checkpoint::recommend_many` for one user, the library call under the Python package's
//! `Model.recommend` (docs/python.md reports both):
//!
//! ```sh
//! cargo run --release -p unlearnrec-core --example recommend_timing -- CKPT [USER_INDEX] [K] [CALLS]
//! ```

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        return Err("usage: recommend_timing CKPT [USER_INDEX] [K] [CALLS]".into());
    };
    let user: u32 = args.get(1).map_or(Ok(0), |s| s.parse())?;
    let k: usize = args.get(2).map_or(Ok(10), |s| s.parse())?;
    let calls: usize = args.get(3).map_or(Ok(1000), |s| s.parse())?;
    let ckpt = unlearnrec_core::load(std::path::Path::new(path))?;
    ckpt.recommend_many(&[user], k)?; // builds the serving view once
    // Best of five rounds, as Python's `min(timeit.repeat(..., number=calls, repeat=5))`.
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..calls {
            std::hint::black_box(ckpt.recommend_many(std::hint::black_box(&[user]), k)?);
        }
        best = best.min(start.elapsed().as_secs_f64() / calls as f64);
    }
    println!("recommend_many(1 user, k={k}): {:.2} µs per call (best of 5 rounds of {calls} calls)", best * 1e6);
    Ok(())
}
