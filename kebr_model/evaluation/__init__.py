"""What a run's results say: the MSA metrics (`metrics`), MCC's analysis (`analyse`), the run's plots
(`plots`) and t-SNE maps of pooled features (`tsne`)."""
