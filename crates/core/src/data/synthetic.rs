//! Seeded synthetic datasets (latent communities, power-law item popularity).
