//! [`Priorities`]: the worker setting that makes it consume each queue with its priority tiers
//! (`<q>.high`, `<q>`, `<q>.low`), and in which order it starts their jobs.

use std::fmt;
use std::str::FromStr;

/// How a worker consuming tiers chooses the next job when a concurrency slot frees
/// (`--priorities strict` or `--priorities weighted:6,3,1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priorities {
    /// The highest tier that has a job waiting in the worker.
    Strict,
    /// By weights `[high, normal, low]`, among the tiers that have a job waiting: out of every
    /// `high + normal + low` starts while all three have work, `high` are high jobs, and so on
    /// (smooth weighted round-robin, so the tiers interleave). Each weight at least 1.
    Weighted([u32; 3]),
}

impl Priorities {
    /// What is wrong with this setting, if anything.
    pub(crate) fn problem(&self) -> Option<String> {
        match self {
            Priorities::Weighted(weights) if weights.contains(&0) => {
                Some(format!("priorities: {self} has a zero weight: each of the three weights must be at least 1"))
            }
            _ => None,
        }
    }
}

impl fmt::Display for Priorities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Priorities::Strict => f.write_str("strict"),
            Priorities::Weighted([high, normal, low]) => write!(f, "weighted:{high},{normal},{low}"),
        }
    }
}

impl FromStr for Priorities {
    type Err = String;

    /// `strict`, or `weighted:` and three whole numbers of at least 1 (high, normal, low).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text == "strict" {
            return Ok(Priorities::Strict);
        }
        let expected = || format!("`{text}` is not `strict` or `weighted:H,N,L` (three whole numbers of at least 1)");
        let Some(weights) = text.strip_prefix("weighted:") else { return Err(expected()) };
        let weights: Vec<u32> =
            weights.split(',').map(|w| w.trim().parse::<u32>()).collect::<Result<_, _>>().map_err(|_| expected())?;
        let weights: [u32; 3] = weights.try_into().map_err(|_| expected())?;
        if weights.contains(&0) {
            return Err(expected());
        }
        Ok(Priorities::Weighted(weights))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_reads_strict_or_three_positive_weights_and_names_anything_else() {
        assert_eq!("strict".parse(), Ok(Priorities::Strict));
        assert_eq!(" weighted:6, 3,1 ".parse(), Ok(Priorities::Weighted([6, 3, 1])));
        for bad in [
            "",
            "weighted",
            "weighted:6,3",
            "weighted:6,3,1,1",
            "weighted:6,0,1",
            "weighted:a,b,c",
            "weighted:-1,2,3",
            "lax",
        ] {
            let error = bad.parse::<Priorities>().expect_err(bad);
            assert!(error.contains(&format!("`{}`", bad.trim())) && error.contains("weighted:H,N,L"), "{error}");
        }
        assert_eq!(Priorities::Weighted([6, 3, 1]).to_string().parse(), Ok(Priorities::Weighted([6, 3, 1])));
        assert!(Priorities::Weighted([1, 0, 1]).problem().is_some_and(|p| p.starts_with("priorities: weighted:1,0,1")));
        assert_eq!(Priorities::Strict.problem(), None);
    }
}
