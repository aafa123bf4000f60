"""The flags that step 7 and the sweep share, each declared once: the gmm sampler's components and
how many generated images each sampler is scored on."""
from latentlab.generate.sampling import GMM_COMPONENTS, NUM_SCORED
from latentlab.ranges import mixture_components, scored_images


def add_gmm_components(group) -> None:
    group.add_argument("--gmm_components", type=mixture_components, default=GMM_COMPONENTS,
                       help="gmm: components of the mixture")


def add_num_scored(group, what: str) -> None:
    group.add_argument("--num_scored", type=scored_images, default=NUM_SCORED, help=what)
