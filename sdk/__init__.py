"""kvqe.sdk: Model.score()/stream()/enhance(), frame sources, sampling, preprocessing and SR tiling."""
