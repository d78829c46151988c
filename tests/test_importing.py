"""CSV imports: good rows kept, every bad row reported on its line, whatever the file's dialect."""

from __future__ import annotations

import io

from alertd import importing, model

SUBSCRIBERS = """\
id,phone,push_token,locale,zones
c1,06 12 34 56 78,,fr,75056
c2,0612,,fr,75056

c3,,tok-3,EN,75056;2a004 13
c4,+33612345679,,,
c5,+33612345670,,french,99999
c6,,,fr,75056
c7,+33 6 12 34 56 70,tok-7,,971
"""


def problems(result: importing.ImportResult) -> list[tuple[int, str]]:
    return [(p.line, p.field) for p in result.problems]


def test_good_rows_are_kept_and_bad_rows_reported_on_their_line(tmp_path):
    path = tmp_path / "subscribers.csv"
    path.write_text(SUBSCRIBERS, encoding="utf-8")
    result = importing.read_subscribers(str(path))
    assert result.items == (
        model.Recipient(id="c1", locale="fr", zones=("75056",), phone="+33612345678"),
        model.Recipient(id="c3", locale="en", zones=("75056", "2A004", "13"), push_token="tok-3"),
        model.Recipient(id="c7", locale="fr", zones=("971",), phone="+33612345670", push_token="tok-7"),
    )
    assert problems(result) == [
        (3, "phone"),  # too short
        (6, "zones"),  # none given
        (7, "locale"),
        (7, "zones"),
        (8, "push_token"),  # neither phone nor push token
    ]
    assert "99999" in result.problems[3].reason


def test_bom_and_semicolons_as_written_by_a_french_spreadsheet():
    data = "\ufeffid;phone;push_token;locale;zones\r\nc1;06 12 34 56 78;;fr;75056 2B033\r\nc2;;;fr;75056\r\n"
    result = importing.read_subscribers(io.BytesIO(data.encode("utf-8")))
    assert [r.id for r in result.items] == ["c1"]
    assert result.items[0].zones == ("75056", "2B033")
    assert problems(result) == [(3, "push_token")]


def test_a_text_stream_with_a_bom_and_columns_in_another_order():
    data = "\ufeffzones,id,phone\n13055,c9,+33612345678\n"
    result = importing.read_subscribers(io.StringIO(data))
    assert result.items == (model.Recipient(id="c9", locale="fr", zones=("13055",), phone="+33612345678"),)
    assert result.problems == ()


def test_missing_columns_are_one_clear_problem_each():
    result = importing.read_subscribers(io.StringIO("identifier,phone\nc1,+33612345678\n"))
    assert result.items == ()
    assert [(p.line, p.field, p.reason.split(" (")[0]) for p in result.problems] == [
        (1, "id", "missing column"),
        (1, "zones", "missing column"),
        (1, "identifier", "unknown column, ignored"),
    ]


def test_duplicated_ids_the_later_row_wins_and_is_noted():
    data = "id,phone,zones\nc1,+33612345678,75056\nc2,+33612345679,75056\nc1,+33612345670,13055\n"
    result = importing.read_subscribers(io.StringIO(data))
    assert [(r.id, r.phone) for r in result.items] == [("c1", "+33612345670"), ("c2", "+33612345679")]
    assert [(p.line, p.field, p.reason) for p in result.problems] == [
        (4, "id", "duplicate of line 2: this row replaces it")
    ]


def test_a_row_with_too_many_fields_is_refused():
    result = importing.read_subscribers(io.StringIO("id,phone,zones\nc1,+33612345678,75056,extra\n"))
    assert result.items == () and problems(result) == [(2, "row")]


def test_sirens_with_coordinates():
    data = ("id,zone,label,lat,lon\ns1,75056,Hôtel de ville,48.85,2.35\ns2,2a004,,,\ns3,20,Corse?,,\n,75,,,\n"
            "s4,75056,,48.85,\ns5,75056,,\"48,86\",\"2,36\"\ns6,75056,,95,2\n")
    result = importing.read_sirens(io.StringIO(data))
    assert result.items == (
        model.Siren("s1", "75056", "Hôtel de ville", 48.85, 2.35), model.Siren("s2", "2A004", ""),
        model.Siren("s5", "75056", "", 48.86, 2.36),
    )
    assert problems(result) == [(4, "zone"), (5, "id"), (6, "lon"), (8, "lat")]


def test_subscribers_with_location_and_exercise_flag():
    data = ("id,phone,zones,lat,lon,exercise\nc1,0612345678,75056,48.85,2.35,oui\nc2,0612345679,75056,,,\n"
            "c3,0612345670,75056,48.85,,no\nc4,0612345671,75056,,,maybe\n")
    result = importing.read_subscribers(io.StringIO(data))
    assert [(r.id, r.lat, r.lon, r.exercise) for r in result.items] == [
        ("c1", 48.85, 2.35, True), ("c2", None, None, False),
    ]
    assert problems(result) == [(4, "lon"), (5, "exercise")]


def test_iterating_streams_rows_in_file_order():
    data = "id,zone\ns1,75056\ns2,nowhere\ns3,13\n"
    found = list(importing.iter_sirens(io.StringIO(data)))
    assert [type(x).__name__ for x in found] == ["Siren", "RowProblem", "Siren"]


def test_a_file_that_is_not_utf8_is_reported_not_raised():
    data = "id,zone\ns1,75056\ns2,Saint-\xe9tienne\n".encode("latin-1")
    result = importing.read_sirens(io.BytesIO(data))
    assert [p.field for p in result.problems] == ["file"]
    assert "utf-8" in result.problems[0].reason
