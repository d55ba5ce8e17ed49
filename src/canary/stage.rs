//! The decisions of a canary stage, pure: when to judge, and what each judgement leads to.
//!
//! Spinnaker's canary analysis stage, which this follows: the canary runs for its lifetime and is
//! judged every interval on everything it has reported so far; a judgement below the marginal
//! threshold (Fail) ends the canary at once; the last judgement decides: Pass promotes, Fail
//! stops, and Marginal does what the config's `marginal` says (fail, pass, or wait for a person's
//! `bakery canary approve` / `reject`).

use std::time::Duration;

use super::config::OnMarginal;
use super::judge::Verdict;

/// When to judge, as offsets from the canary's start: every `interval`, and at `lifetime`
/// (always the last). A zero or longer-than-lifetime interval judges once, at the end.
pub fn judgement_times(lifetime: Duration, interval: Duration) -> Vec<Duration> {
    let mut out = Vec::new();
    if !interval.is_zero() {
        let mut t = interval;
        while t < lifetime {
            out.push(t);
            t += interval;
        }
    }
    out.push(lifetime);
    out
}

/// What a judgement leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Keep running until the next judgement.
    Continue,
    /// The canary passed: promote it.
    Promote,
    /// The canary failed: remove it (and its baseline).
    Stop,
    /// Marginal with `marginal: manual`: wait for `bakery canary approve|reject`.
    AwaitApproval,
}

/// The decision after a judgement with `verdict`; `last` when it was the final one.
pub fn decide(verdict: Verdict, last: bool, marginal: OnMarginal) -> Decision {
    match (verdict, last) {
        (Verdict::Fail, _) => Decision::Stop,
        (_, false) => Decision::Continue,
        (Verdict::Pass, true) => Decision::Promote,
        (Verdict::Marginal, true) => match marginal {
            OnMarginal::Fail => Decision::Stop,
            OnMarginal::Pass => Decision::Promote,
            OnMarginal::Manual => Decision::AwaitApproval,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|s| Duration::from_secs(*s)).collect()
    }

    #[test]
    fn judged_every_interval_and_at_the_end() {
        let m = |s| Duration::from_secs(s);
        assert_eq!(judgement_times(m(1800), m(600)), secs(&[600, 1200, 1800]));
        assert_eq!(
            judgement_times(m(1000), m(300)),
            secs(&[300, 600, 900, 1000])
        );
        assert_eq!(judgement_times(m(60), m(0)), secs(&[60]));
        assert_eq!(judgement_times(m(60), m(600)), secs(&[60]));
        assert_eq!(judgement_times(m(0), m(5)), secs(&[0]));
    }

    #[test]
    fn fail_stops_at_once_and_the_last_judgement_decides() {
        use Decision::*;
        for m in [OnMarginal::Fail, OnMarginal::Pass, OnMarginal::Manual] {
            assert_eq!(decide(Verdict::Fail, false, m), Stop);
            assert_eq!(decide(Verdict::Fail, true, m), Stop);
            assert_eq!(decide(Verdict::Marginal, false, m), Continue);
            assert_eq!(decide(Verdict::Pass, false, m), Continue);
            assert_eq!(decide(Verdict::Pass, true, m), Promote);
        }
        assert_eq!(decide(Verdict::Marginal, true, OnMarginal::Fail), Stop);
        assert_eq!(decide(Verdict::Marginal, true, OnMarginal::Pass), Promote);
        assert_eq!(
            decide(Verdict::Marginal, true, OnMarginal::Manual),
            AwaitApproval
        );
    }
}
