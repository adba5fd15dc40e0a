//! Conversions between wire messages and the transport-free `session` types that both ends of
//! the agent stream need (the agent sends them, the relay reads them).

#![warn(missing_docs)]

use std::time::Duration;

use crate::session::Denial;

/// A denial on the wire.
pub fn denial_to_wire(denial: Denial) -> super::Denial {
    let kind = match denial {
        Denial::Required => super::DenialKind::Required,
        Denial::Wrong => super::DenialKind::Wrong,
        Denial::Throttled(_) => super::DenialKind::Throttled,
    };
    let retry_after_ms = u64::try_from(denial.retry_after().as_millis()).unwrap_or(u64::MAX);
    super::Denial { kind: kind as i32, retry_after_ms }
}

/// A wire denial as a `Denial` (an unknown kind reads as `Required`: refuse, never admit).
pub fn denial_from_wire(d: &super::Denial) -> Denial {
    match d.kind() {
        super::DenialKind::Required => Denial::Required,
        super::DenialKind::Wrong => Denial::Wrong,
        super::DenialKind::Throttled => Denial::Throttled(Duration::from_millis(d.retry_after_ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_survive_the_wire() {
        for d in [Denial::Required, Denial::Wrong, Denial::Throttled(Duration::from_millis(2500))] {
            assert_eq!(denial_from_wire(&denial_to_wire(d)), d);
        }
        let unknown = crate::proto::Denial { kind: 99, retry_after_ms: 0 };
        assert_eq!(denial_from_wire(&unknown), Denial::Required);
    }
}
