use std::time::Instant;
use candle_core::{Device, Tensor, D};
fn main() {
    let dev = Device::Cpu;
    let n = 1800; let d = 64; let b = 2048;
    let e = candle_core::Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, d), &dev).unwrap()).unwrap();
    let idx: Vec<u32> = (0..b as u32).map(|i| i % n as u32).collect();
    let it = Tensor::from_vec(idx, b, &dev).unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        let x = e.as_tensor().index_select(&it, 0).unwrap();
        let t1 = t.elapsed();
        let y = (&x * &x).unwrap().sum(D::Minus1).unwrap();
        let t2 = t.elapsed();
        let z = y.relu().unwrap().mean_all().unwrap();
        let t3 = t.elapsed();
        let g = z.backward().unwrap();
        let t4 = t.elapsed();
        let _ = g;
        let s = e.as_tensor().sqr().unwrap().sum_all().unwrap();
        let t5 = t.elapsed();
        println!("index {:?} mulsum {:?} relu-mean {:?} backward {:?} sqsum {:?}", t1, t2-t1, t3-t2, t4-t3, t5-t4);
        let _ = s;
    }
}
