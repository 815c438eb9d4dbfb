"""Stage 5: numbers the notebooks plot: firing counts and ratios (:mod:`.firing`), top contexts (:mod:`.contexts`),
decoder cosines (:mod:`.cosines`), the logit lens (:mod:`.logit_lens`), ground-truth concept scores on lab pairs
(:mod:`.concepts`) and latent browsers (:mod:`.widgets`)."""
