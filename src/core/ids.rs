//! Newtype identifiers, so a machine id can never be passed where a link id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh random (v4) id: 122 random bits.
            pub fn random() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// A machine: stable from enrollment on.
    MachineId
);
uuid_id!(
    /// A share link.
    LinkId
);
uuid_id!(
    /// A session (one shell or one exec) on a machine.
    SessionId
);
uuid_id!(
    /// A user account.
    UserId
);
uuid_id!(
    /// A fleet of machines.
    FleetId
);
uuid_id!(
    /// A server node (one `cmdop server` process): fresh at each start.
    NodeId
);
