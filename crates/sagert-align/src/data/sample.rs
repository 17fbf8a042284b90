//! Seeded, category-stratified, nested samples.
//!
//! `--limit 50`, `--limit 200` and `--limit 800` should train on subsets of one
//! another (so a size sweep measures size, not a new draw) and each should keep
//! the dataset's category proportions. Both follow from one seeded order of the
//! whole dataset, [`stratified_order`], whose every prefix is proportional:
//! [`limit`] takes a prefix of it.

use std::collections::BTreeMap;

use super::PreferencePair;

/// A seeded permutation of `0..categories.len()` whose every prefix is a
/// stratified sample: for every prefix length `k` and category `c` holding
/// `n_c` of the `n` items, the prefix holds strictly fewer than one item more
/// or less than the proportional `k * n_c / n`. The same categories and seed
/// give the same order.
///
/// Method: each category's members are shuffled (seeded), and the categories
/// take turns by Tijdeman's solution of the chairman assignment problem
/// (Discrete Mathematics 32, 1980): at prefix length `k`, the categories owed at
/// least `1/(2C-2)` of an item (`k * n_c / n - taken_c`, with `C` categories)
/// are candidates, and the candidate that would first fall more than
/// `1 - 1/(2C-2)` behind (the smallest `(taken_c + 1 - 1/(2C-2)) / n_c`) gives
/// its next shuffled member; a seeded ranking of the categories breaks ties. This
/// keeps every category within `1 - 1/(2C-2)` of its share at every prefix. All
/// arithmetic is on integers. `O(n * C)` time.
///
/// A simpler key sort (rank `r` of a member in its category's shuffle, key
/// `(r + u) / n_c` with a seeded `u` in `[0, 1)`) is within one of its share
/// only relative to the last key taken, not to `k`: with tens of categories its
/// prefixes are off by more than one item in most draws, hence the turn-taking.
pub fn stratified_order(categories: &[&str], seed: u64) -> Vec<usize> {
    let mut by_category: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, c) in categories.iter().enumerate() {
        by_category.entry(c).or_default().push(i);
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut groups: Vec<Vec<usize>> = by_category.into_values().collect();
    for g in &mut groups {
        rng.shuffle(g);
    }
    if groups.len() <= 1 {
        return groups.pop().unwrap_or_default();
    }
    let mut rank: Vec<usize> = (0..groups.len()).collect();
    rng.shuffle(&mut rank);

    let n = categories.len() as i128;
    let m = 2 * groups.len() as i128 - 2; // 1/(2C-2) = 1/m
    let sizes: Vec<i128> = groups.iter().map(|g| g.len() as i128).collect();
    let mut taken = vec![0usize; groups.len()];
    let mut order = Vec::with_capacity(categories.len());
    for k in 1..=n {
        let mut best: Option<usize> = None;
        for g in 0..groups.len() {
            // Owed at least 1/m: (k * n_g / n - taken) >= 1/m.
            let owed = k * sizes[g] - taken[g] as i128 * n;
            if owed * m < n {
                continue;
            }
            best = Some(match best {
                None => g,
                Some(b) => {
                    // Deadlines (taken + 1 - 1/m) / n_c, cross-multiplied by m.
                    let dg = (taken[g] as i128 * m + m - 1) * sizes[b];
                    let db = (taken[b] as i128 * m + m - 1) * sizes[g];
                    if dg < db || (dg == db && rank[g] < rank[b]) {
                        g
                    } else {
                        b
                    }
                }
            });
        }
        // The amounts owed sum to 1 item, so the largest is at least 1/C >= 1/m,
        // and a category owed anything has members left.
        let g = best.expect("some category is owed at least 1/(2C-2) of an item");
        order.push(groups[g][taken[g]]);
        taken[g] += 1;
    }
    order
}

/// At most `n` of `pairs` (all when `n` is `None` or not smaller): the first `n`
/// of [`stratified_order`] over their categories, kept in their file order (the
/// trainer shuffles each epoch itself). Smaller limits with the same seed give
/// subsets of larger ones.
pub fn limit(pairs: Vec<PreferencePair>, n: Option<usize>, seed: u64) -> Vec<PreferencePair> {
    let Some(n) = n.filter(|&n| n < pairs.len()) else { return pairs };
    let categories: Vec<&str> = pairs.iter().map(|p| p.category.as_str()).collect();
    let mut keep = vec![false; pairs.len()];
    for i in stratified_order(&categories, seed).into_iter().take(n) {
        keep[i] = true;
    }
    pairs.into_iter().zip(keep).filter_map(|(p, k)| k.then_some(p)).collect()
}
