//! numpy's legacy `np.random.RandomState`, as far as datasketch needs it.
//!
//! datasketch draws its MinHash permutations from `np.random.RandomState(seed)`
//! with `randint(low, high, dtype=np.uint32 | np.uint64)`. This module
//! reproduces that stream bit for bit: the MT19937 generator seeded with
//! `init_genrand` (numpy's `mt19937_seed`), 64-bit draws as two 32-bit outputs
//! (high word first, `mt19937_next64`), and numpy's bounded integers with
//! *masked rejection* sampling (`random_bounded_uint{32,64}_fill` with
//! `use_masked`, which `RandomState` always uses): draw, AND with the smallest
//! all-ones mask covering the range, retry while above it. Ranges that fit in
//! 32 bits are drawn from 32-bit outputs even for `uint64`, as numpy does.
//!
//! The tests compare the first values with numpy's.

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// `np.random.RandomState(seed)`: MT19937 with numpy's bounded-integer sampling.
pub(crate) struct RandomState {
    mt: Box<[u32; N]>,
    pos: usize,
}

impl RandomState {
    /// `np.random.RandomState(seed)` for an integer seed (numpy accepts
    /// 0..2^32 only).
    pub(crate) fn new(seed: u32) -> Self {
        let mut mt = Box::new([0u32; N]);
        mt[0] = seed;
        for i in 1..N {
            let prev = mt[i - 1];
            mt[i] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(i as u32);
        }
        RandomState { mt, pos: N }
    }

    fn refill(&mut self) {
        let mt = &mut self.mt;
        for i in 0..N {
            let y = (mt[i] & UPPER_MASK) | (mt[(i + 1) % N] & LOWER_MASK);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            mt[i] = mt[(i + M) % N] ^ (y >> 1) ^ mag;
        }
        self.pos = 0;
    }

    /// The next 32-bit output (`genrand_int32`).
    pub(crate) fn next_u32(&mut self) -> u32 {
        if self.pos == N {
            self.refill();
        }
        let mut y = self.mt[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// The next 64-bit output: two 32-bit outputs, the first one high.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let hi = u64::from(self.next_u32());
        let lo = u64::from(self.next_u32());
        (hi << 32) | lo
    }

    /// `randint(low, high, dtype=np.uint64)`: uniform in `low..high`.
    ///
    /// # Panics
    ///
    /// When `low >= high` (numpy raises `ValueError`).
    pub(crate) fn randint_u64(&mut self, low: u64, high: u64) -> u64 {
        assert!(low < high, "randint: low {low} >= high {high}");
        let rng = high - 1 - low;
        if rng == 0 {
            return low;
        }
        if rng <= u64::from(u32::MAX) {
            return low + u64::from(self.bounded_u32(rng as u32));
        }
        if rng == u64::MAX {
            return low.wrapping_add(self.next_u64());
        }
        let mask = mask_u64(rng);
        loop {
            let v = self.next_u64() & mask;
            if v <= rng {
                return low + v;
            }
        }
    }

    /// `randint(low, high, dtype=np.uint32)`: uniform in `low..high`, with
    /// `high` up to 2^32.
    ///
    /// # Panics
    ///
    /// When `low >= high` or `high > 2^32`.
    pub(crate) fn randint_u32(&mut self, low: u32, high: u64) -> u32 {
        assert!(u64::from(low) < high && high <= 1 << 32, "randint: bad bounds {low}..{high}");
        let rng = (high - 1 - u64::from(low)) as u32;
        if rng == 0 {
            return low;
        }
        low + self.bounded_u32(rng)
    }

    /// Uniform in `0..=rng` from 32-bit outputs (`rng > 0`).
    fn bounded_u32(&mut self, rng: u32) -> u32 {
        if rng == u32::MAX {
            return self.next_u32();
        }
        let mask = mask_u64(u64::from(rng)) as u32;
        loop {
            let v = self.next_u32() & mask;
            if v <= rng {
                return v;
            }
        }
    }
}

/// The smallest all-ones bit mask that covers `max` (numpy's `gen_mask`).
fn mask_u64(max: u64) -> u64 {
    let mut mask = max;
    mask |= mask >> 1;
    mask |= mask >> 2;
    mask |= mask >> 4;
    mask |= mask >> 8;
    mask |= mask >> 16;
    mask |= mask >> 32;
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    // Golden values printed by numpy 2.4.6:
    // python3 -c "import numpy as np; r = np.random.RandomState(1); \
    //   print([int(r.randint(0, 2**32, dtype=np.uint32)) for _ in range(3)])"
    #[test]
    fn raw_32_bit_stream_matches_numpy() {
        let mut r = RandomState::new(1);
        let got: Vec<u32> = (0..3).map(|_| r.randint_u32(0, 1 << 32)).collect();
        assert_eq!(got, [1_791_095_845, 4_282_876_139, 3_093_770_124]);
    }

    // python3 -c "import numpy as np; r = np.random.RandomState(42); \
    //   print([int(r.randint(0, 10, dtype=np.uint64)) for _ in range(8)], \
    //         [int(r.randint(5, 2**40, dtype=np.uint64)) for _ in range(3)])"
    #[test]
    fn bounded_draws_match_numpy() {
        let mut r = RandomState::new(42);
        let small: Vec<u64> = (0..8).map(|_| r.randint_u64(0, 10)).collect();
        assert_eq!(small, [6, 3, 7, 4, 6, 9, 2, 6]);
        let large: Vec<u64> = (0..3).map(|_| r.randint_u64(5, 1 << 40)).collect();
        assert_eq!(large, [319_800_038_863, 375_095_422_329, 425_815_370_604]);
    }

    #[test]
    fn stream_survives_a_refill() {
        // The 625th output comes from the second block of 624.
        let mut r = RandomState::new(1);
        for _ in 0..624 {
            r.next_u32();
        }
        // python3 -c "import numpy as np; r = np.random.RandomState(1); \
        //   print(int(r.randint(0, 2**32, size=625, dtype=np.uint32)[-1]))"
        assert_eq!(r.next_u32(), 1_104_314_680);
    }
}
