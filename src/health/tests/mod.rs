//! Tests of the health module, by layer.

mod state_props;
mod state_unit;
