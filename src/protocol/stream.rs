//! Wire types of the Stream API.
