//! Local delivery: how events that reach this relay instance get to its
//! sessions. Each room has one bounded ring shared by its local subscribers
//! (`ring`), presence changes are coalesced per room (`presence`), and each
//! peer has a small inbox for direct messages (`fanout`). Below both the hub
//! (which subscribes sessions) and the brokers (which hand every event here),
//! so neither imports the other to deliver.

mod fanout;
mod presence;
mod ring;

pub use fanout::{DIRECT_QUEUE, Fanout, Inbox};
pub use ring::{Lagged, RingReceiver};
