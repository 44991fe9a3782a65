//! What the lab's own commands ask of a guest, as plans: every provider/client pair
//! (with capture and the demo's copies), and the DMA accounting of marked windows.

pub mod dma;
pub mod pairs;
