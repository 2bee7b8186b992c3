"""The built-in segmentation backends' config sections: `segment.classical` and `segment.hpa`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hpa_ray.core.config import Section, Sha256, Text


class _WorkingResolution(Section):
    """Where a backend segments: `scale` of the image (made for HPA's 2048² images, nuclei of
    radius ~78 px: ~20 px at 1/4); an image whose nuclei would span fewer than
    min_working_nucleus_radius px at `scale` (a 512² image: ~5) is segmented finer, up to full
    resolution, so that they span that many (backends.nuclei.working_scale); 0: never."""

    scale: float = Field(0.25, gt=0, le=1)  # model resolution relative to the image
    min_working_nucleus_radius: float = Field(10.0, ge=0)  # working px; 0: always `scale`


class ClassicalConfig(_WorkingResolution):
    nucleus_sigma: float = Field(8.0, ge=0)  # blue smoothing, full-resolution px
    nucleus_threshold: float = Field(1.0, gt=0)  # × Otsu level of the smoothed blue channel
    nucleus_split_h: float = Field(10.0, gt=0)  # distance-peak height (px) that splits nuclei
    # Touching pieces of the split are joined again (one lobed nucleus) unless the blue signal
    # dips along their border below merge_valley × the dimmer piece's median, or the dimmer
    # piece's median is below merge_contrast × the brighter's (see classical.merge_lobes).
    merge_lobes: bool = True
    merge_valley: float = Field(0.85, ge=0)
    merge_contrast: float = Field(0.75, ge=0, le=1)
    min_nucleus_area: int = Field(2400, ge=0)  # full-resolution px
    body_sigma: float = Field(8.0, ge=0)  # cell-body smoothing, full-resolution px
    cell_threshold: float = Field(0.2, gt=0)  # × Otsu level of the smoothed cell-body signal
    green_weight: float = Field(0.5, ge=0)  # weight of the protein channel in the body signal
    min_cell_area: int = Field(12800, ge=0)  # full-resolution px
    min_signal: float = Field(0.02, ge=0, le=1)  # blue peak below this: no nuclei at all
    # Uneven illumination: a nucleus's threshold scales with its peak / the typical peak, a
    # cell's foreground level with the body signal over its nucleus / the typical one: never
    # raised, never below illumination_floor × the image's level (see classical._lit_objects).
    follow_illumination: bool = True
    illumination_floor: float = Field(0.3, gt=0, le=1)
    # The pixel values above (sigmas, split height, areas) are for nuclei of the reference
    # radius; with adapt_to_nucleus_size each image's typical nucleus radius r is estimated (in
    # working px, as if at `scale`) and they scale by k = r / reference (lengths ×k, areas ×k²,
    # k within 1/3..3) when r is beyond ×/÷ nucleus_radius_tolerance of the reference (another
    # magnification, a smaller cell type) after the working scale has followed the nuclei;
    # within it (the spread of cell lines at one magnification: the fitted images span
    # 74-93 px) they stay as they are.
    adapt_to_nucleus_size: bool = True
    reference_nucleus_radius: float = Field(78.0, gt=0)  # full-resolution px
    nucleus_radius_tolerance: float = Field(1.2, ge=1)


class HpaConfig(_WorkingResolution):
    nuclei_model: Text | None = None  # path to dpn_unet_nuclei_v1.pth (a pickled module)
    cell_model: Text | None = None  # path to dpn_unet_cell_3ch_v1.pth (a pickled module)
    nuclei_sha256: Sha256 = None  # expected SHA-256 of nuclei_model, checked when set
    cell_sha256: Sha256 = None  # expected SHA-256 of cell_model, checked when set
    device: Literal["auto", "cuda", "cpu"] = "auto"  # auto: CUDA when the actor has a GPU
    nucleus_threshold: float = Field(0.4, gt=0, lt=1)  # interior probability for nucleus seeds
    cell_threshold: float = Field(0.5, gt=0, lt=1)  # 1 - background probability for cells
    min_nucleus_area: int = Field(2400, ge=0)  # full-resolution px
    min_cell_area: int = Field(12800, ge=0)  # full-resolution px
