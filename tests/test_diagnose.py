"""The diagnosis of a latent space against answers known beforehand: continuity of an exact copy,
the global score of a scaled copy."""
import numpy as np
import pytest

from latentlab.analysis.scores import continuity, global_score, projection_structure, trustworthiness


def test_continuity_of_an_exact_copy_is_1_and_the_global_score_of_a_scaled_copy_is_1():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2))
    assert continuity(x, x.copy()) == pytest.approx(1.0)
    assert global_score(x, 4.0 * x) == pytest.approx(1.0)
    high = np.concatenate([x, np.zeros((300, 3))], axis=1)
    row = projection_structure(high, x)
    assert row["trustworthiness"] == pytest.approx(1.0) and set(row["continuity_k"]) == {"5", "10", "20"}


def test_continuity_is_trustworthiness_with_the_spaces_swapped():
    rng = np.random.default_rng(1)
    high, low = rng.normal(size=(200, 6)), rng.normal(size=(200, 2))
    assert continuity(high, low, 10) == trustworthiness(low, high, 10)
    assert global_score(high, low) < 0.3
