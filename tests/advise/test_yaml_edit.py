"""`router advise --write` edits the config's text: comments, order and anchors survive."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from router.advise.yaml_edit import EditError, set_values

TUNED = {"timeout": 9, "retry.attempts": 1, "retry.max_wait": 2.5, "breaker.fail_max": 7}


def test_values_replace_block_and_flow_scalars_in_place_and_keep_every_comment():
    text = textwrap.dedent("""\
        # top
        targets:
          primary:
            model: openai/x   # the primary
            timeout: 30       # per attempt
            retry:
              attempts: 3     # keep this comment
            # trailing comment
          secondary: {model: openai/y, retry: {attempts: 3}}
        chains:
          default: [primary, secondary]
        """)
    for name in ("primary", "secondary"):
        text = set_values(text, ("targets", name), TUNED)
    assert "timeout: 9       # per attempt" in text and "attempts: 1     # keep this comment" in text
    assert "# top" in text and "# trailing comment" in text and "# the primary" in text
    data = yaml.safe_load(text)["targets"]
    for name in ("primary", "secondary"):
        assert data[name]["timeout"] == 9 and data[name]["retry"] == {"attempts": 1, "max_wait": 2.5}
        assert data[name]["breaker"] == {"fail_max": 7}


def test_an_alias_is_replaced_by_its_values_and_the_anchor_is_left_to_its_other_users():
    text = textwrap.dedent("""\
        defaults:
          retry: &fast {attempts: 3, min_wait: 0.5}   # shared
        targets:
          primary:
            model: openai/a
            retry: *fast   # aliased
          secondary: {model: openai/b, retry: *fast}
        """)
    text = set_values(text, ("targets", "primary"), {"retry.attempts": 1})
    data = yaml.safe_load(text)
    assert data["targets"]["primary"]["retry"] == {"attempts": 1, "min_wait": 0.5}
    assert data["targets"]["secondary"]["retry"] == data["defaults"]["retry"] == {"attempts": 3, "min_wait": 0.5}
    assert "# aliased" in text and "&fast" in text


def test_an_anchor_defined_inside_the_target_is_refused_rather_than_changed_for_everyone():
    text = "targets:\n  p:\n    model: x\n    retry: &r {attempts: 3}\n  q: {model: y, retry: *r}\n"
    with pytest.raises(EditError, match="anchor that other keys use"):
        set_values(text, ("targets", "p"), {"retry.attempts": 1})


def test_a_missing_target_is_an_error_naming_it():
    with pytest.raises(EditError, match="targets.nope: no such mapping"):
        set_values("targets:\n  p: {model: x}\n", ("targets", "nope"), {"timeout": 1})
