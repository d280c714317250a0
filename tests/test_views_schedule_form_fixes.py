"""Small defects of the schedule form a new user hit: the live preview's swaps, time inputs,
the strategy control and its hints."""

from __future__ import annotations

import re

import pytest

from tests.test_views_schedules import valid_data

HX = {"HX-Request": "true"}


def element_ids(html: str) -> set[str]:
    return set(re.findall(r'\sid="([^"]+)"', html))


def oob_targets(html: str) -> set[str]:
    """The ids an htmx answer swaps out of band (each must exist on the page, else htmx
    logs oobErrorNoTarget)."""
    tags = re.findall(r"<[^>]*hx-swap-oob[^>]*>", html)
    return {match for tag in tags for match in re.findall(r'\sid="([^"]+)"', tag)}


# ------------------------------------------------------------------ preview swaps


def test_the_new_schedule_preview_swaps_only_what_the_page_has(client, mia, tenant, source) -> None:
    client.force_login(mia)
    page = client.get(f"/t/{tenant.code}/schedules/new/").text
    answer = client.post(f"/t/{tenant.code}/schedules/preview/", valid_data(source), headers=HX).text
    assert "<time datetime=" in answer  # the slots are there
    assert oob_targets(answer) <= element_ids(page)


def test_the_edit_preview_still_updates_the_retention_preview(client, mia, schedule, source) -> None:
    client.force_login(mia)
    page = client.get(f"/schedules/{schedule.code}/edit/").text
    url = f"/t/{schedule.tenant.code}/schedules/preview/?schedule={schedule.code}"
    answer = client.post(url, valid_data(source, name=schedule.name), headers=HX).text
    assert oob_targets(answer) == {"retention-preview"}
    assert "retention-preview" in element_ids(page)


@pytest.mark.parametrize("path", ["new", "fields"])
def test_no_partial_of_the_new_form_names_a_missing_target(client, mia, tenant, source, path) -> None:
    client.force_login(mia)
    page = client.get(f"/t/{tenant.code}/schedules/new/").text
    if path == "fields":
        answer = client.post(f"/t/{tenant.code}/schedules/fields/", valid_data(source, kind="weekly"), headers=HX).text
    else:
        answer = client.post(f"/t/{tenant.code}/schedules/preview/", valid_data(source, kind="weekly"), headers=HX).text
    assert oob_targets(answer) <= element_ids(page)
