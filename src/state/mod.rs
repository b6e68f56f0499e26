pub mod cache;
pub mod keyed;
