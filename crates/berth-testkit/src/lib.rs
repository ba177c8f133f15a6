//! Test fixtures (filled in below).
