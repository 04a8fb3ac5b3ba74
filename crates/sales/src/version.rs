//! The version of a status: one total order over the status updates of an order, a line, a
//! line's payment or a return, so the newest wins whatever order the updates arrive in.
//!
//! A version is compared field by field:
//!
//! 1. the status date; an update without a date sorts before every dated one (its date is
//!    unknown, so it can never claim to be newer than a date someone wrote down);
//! 2. the status's place in its lifecycle (its rank: [`crate::status::lifecycle_rank`],
//!    [`crate::status::payment_rank`], the post-sales return rank), which decides between
//!    updates of equal dates and between updates without dates;
//! 3. the status and then the reason as sent, byte by byte: a last resort, so that two
//!    different statuses of the same date and rank still end the same way in any arrival
//!    order (arrival order never decides).
//!
//! Equal versions are the same update delivered again. The database compares stored
//! versions with the same rule (`omsc_status_supersedes`, migration V13); the integration
//! tests check that both agree.

use chrono::{DateTime, SubsecRound, Utc};

/// A status update's version. Field order is comparison order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// The status date at the database's precision (microseconds).
    pub date: Option<DateTime<Utc>>,
    pub rank: i16,
    pub status: String,
    /// `""` when the update has no reason (as the database compares it).
    pub reason: String,
}

impl Version {
    pub fn new(date: Option<DateTime<Utc>>, rank: i16, status: &str, reason: Option<&str>) -> Self {
        Self {
            date: date.map(|d| d.trunc_subsecs(6)),
            rank,
            status: status.to_owned(),
            reason: reason.unwrap_or_default().to_owned(),
        }
    }

    /// Whether an update of this version replaces a stored status of version `stored`.
    pub fn supersedes(&self, stored: &Version) -> bool {
        self > stored
    }
}

/// The rank of "no status yet": every status outranks it.
pub const NO_STATUS: i16 = 0;

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn at(secs: i64) -> Option<DateTime<Utc>> {
        Some(Utc.timestamp_opt(1_780_000_000 + secs, 0).unwrap())
    }

    #[test]
    fn a_later_date_wins_whatever_the_rank() {
        let complete = Version::new(at(0), 5, "COMPLETE", None);
        let hold_later = Version::new(at(1), 2, "ONHOLD", Some("PAYMENT"));
        assert!(hold_later.supersedes(&complete));
        assert!(!complete.supersedes(&hold_later));
    }

    #[test]
    fn an_update_without_a_date_never_replaces_a_dated_status() {
        let received = Version::new(at(0), 1, "RECEIVED", None);
        let complete_undated = Version::new(None, 5, "COMPLETE", None);
        assert!(!complete_undated.supersedes(&received));
        assert!(received.supersedes(&complete_undated));
    }

    #[test]
    fn equal_or_missing_dates_go_by_the_lifecycle() {
        for date in [None, at(0)] {
            let logistics = Version::new(date, 3, "LOGISTICS", Some("READYTOSHIP"));
            let received = Version::new(date, 1, "RECEIVED", Some("IMPORTED"));
            assert!(logistics.supersedes(&received));
            assert!(!received.supersedes(&logistics));
        }
    }

    #[test]
    fn the_same_update_twice_is_no_change_and_anything_beats_no_status() {
        let a = Version::new(at(0), 3, "LOGISTICS", None);
        assert!(!a.supersedes(&a.clone()));
        let none = Version::new(None, NO_STATUS, "", None);
        assert!(Version::new(None, 1, "RECEIVED", None).supersedes(&none));
    }

    fn version() -> impl Strategy<Value = Version> {
        (
            prop::option::of(0i64..4),
            1i16..8,
            prop::sample::select(vec!["A", "B", "LOGISTICS"]),
            prop::option::of(prop::sample::select(vec!["", "X", "Y"])),
        )
            .prop_map(|(date, rank, status, reason)| {
                Version::new(date.and_then(at), rank, status, reason)
            })
    }

    proptest! {
        /// Whatever order a set of updates arrives in, applying each one that supersedes
        /// the stored status leaves the same status: the greatest.
        #[test]
        fn arrival_order_never_decides(mut updates in prop::collection::vec(version(), 1..8),
                                       seed in any::<u64>()) {
            let apply = |updates: &[Version]| {
                let mut stored = Version::new(None, NO_STATUS, "", None);
                for u in updates {
                    if u.supersedes(&stored) {
                        stored = u.clone();
                    }
                }
                stored
            };
            let in_order = apply(&updates);
            // A deterministic shuffle from the seed.
            let n = updates.len();
            let mut s = seed;
            for i in (1..n).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                updates.swap(i, (s >> 33) as usize % (i + 1));
            }
            prop_assert_eq!(apply(&updates), in_order);
        }

        #[test]
        fn exactly_one_of_two_different_versions_supersedes(a in version(), b in version()) {
            prop_assert_eq!(a.supersedes(&b) || b.supersedes(&a), a != b);
            prop_assert!(!(a.supersedes(&b) && b.supersedes(&a)));
        }
    }
}
