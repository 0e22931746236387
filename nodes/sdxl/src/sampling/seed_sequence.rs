//! numpy's `SeedSequence`: the hash that turns a seed (and a spawn key) into well-mixed 32-bit
//! seeds. torchsde's Brownian trees seed each interval's noise with it, so ComfyUI's SDE
//! samplers can be reproduced only through it.

const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;

/// The entropy pool of one seed sequence.
pub struct SeedSequence {
    pool: Vec<u32>,
}

impl SeedSequence {
    /// `SeedSequence(entropy, spawn_key=spawn_key, pool_size=pool_size)`.
    pub fn new(entropy: u64, spawn_key: &[u64], pool_size: usize) -> Self {
        let mut entropy_words = words(entropy);
        let spawn: Vec<u32> = spawn_key.iter().flat_map(|&key| words(key)).collect();
        // numpy fills the run's entropy out to the pool with zeros when a spawn key follows.
        if !spawn.is_empty() && entropy_words.len() < pool_size {
            entropy_words.resize(pool_size, 0);
        }
        entropy_words.extend(spawn);
        let mut hash_const = INIT_A;
        let mut hashmix = |value: u32| {
            let mut value = value ^ hash_const;
            hash_const = hash_const.wrapping_mul(MULT_A);
            value = value.wrapping_mul(hash_const);
            value ^ (value >> XSHIFT)
        };
        let mut pool: Vec<u32> = (0..pool_size)
            .map(|i| hashmix(entropy_words.get(i).copied().unwrap_or(0)))
            .collect();
        for source in 0..pool_size {
            for target in 0..pool_size {
                if source != target {
                    let hashed = hashmix(pool[source]);
                    pool[target] = mix(pool[target], hashed);
                }
            }
        }
        for &word in entropy_words.iter().skip(pool_size) {
            for slot in pool.iter_mut() {
                let hashed = hashmix(word);
                *slot = mix(*slot, hashed);
            }
        }
        Self { pool }
    }

    /// `generate_state(n)`: `n` 32-bit seeds drawn from the pool.
    pub fn generate_state(&self, n: usize) -> Vec<u32> {
        let mut hash_const = INIT_B;
        self.pool
            .iter()
            .cycle()
            .take(n)
            .map(|&word| {
                let mut value = word ^ hash_const;
                hash_const = hash_const.wrapping_mul(MULT_B);
                value = value.wrapping_mul(hash_const);
                value ^ (value >> XSHIFT)
            })
            .collect()
    }
}

fn mix(x: u32, y: u32) -> u32 {
    let result = MIX_MULT_L.wrapping_mul(x).wrapping_sub(MIX_MULT_R.wrapping_mul(y));
    result ^ (result >> XSHIFT)
}

/// `n` as numpy splits an integer: 32-bit words, least significant first, one zero word for 0.
fn words(mut n: u64) -> Vec<u32> {
    if n == 0 {
        return vec![0];
    }
    let mut words = Vec::new();
    while n > 0 {
        words.push(n as u32);
        n >>= 32;
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_numpys() {
        // From numpy 2: np.random.SeedSequence(...).generate_state(n).
        assert_eq!(
            SeedSequence::new(12345, &[], 24).generate_state(3),
            [2_888_090_517, 4_151_165_838, 1_159_728_038]
        );
        assert_eq!(
            SeedSequence::new((1 << 40) + 7, &[5, 3], 24).generate_state(4),
            [274_823_170, 1_995_610_858, 3_082_670_851, 2_858_707_861]
        );
        assert_eq!(
            SeedSequence::new(0, &[], 4).generate_state(2),
            [2_968_811_710, 3_677_149_159]
        );
        // More entropy words than the pool holds: the rest are mixed into every pool word.
        assert_eq!(
            SeedSequence::new(u64::MAX, &[1 << 40, 7], 4).generate_state(5),
            [3_048_563_369, 274_651_433, 2_163_816_945, 3_747_291_266, 3_043_400_842]
        );
    }
}
