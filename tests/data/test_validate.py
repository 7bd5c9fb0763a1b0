"""Malformed inputs raise DataError naming the file and the 1-based line."""

from __future__ import annotations

import pytest

from fedrec.data.errors import DataError
from fedrec.data.loaders import load_interactions

GOOD_UDATA = "1\t10\t3\t100\n2\t20\t4\t101\n1\t20\t5\t102\n"
GOOD_ML1M = "1::10::3::100\n2::20::4::101\n1::20::5::102\n"
GOOD_CSV = "userId,movieId,rating,timestamp\n1,10,3.5,100\n2,20,4.0,101\n1,20,5.0,102\n"

# (dataset, relative file, content, expected line, expected words in message)
MALFORMED = [
    ("ml-100k", "ml-100k/u.data", "1,10,3,100\n2,20,4,101\n", 1, ["comma"]),
    ("ml-100k", "ml-100k/u.data", "1\t10\t3\t100\n2\t20\t4\n", 2, ["missing", "timestamp"]),
    ("ml-100k", "ml-100k/u.data", "1\t10\t3\t100\n2\t20\t4\t101\t9\n", 2, ["extra"]),
    ("ml-100k", "ml-100k/u.data", "1\t10\t3\t100\n2\t20\t4\t101\t9\n3\t1\t1\t1\n", 2, ["extra"]),
    ("ml-100k", "ml-100k/u.data", "1\t10\t3\t100\n1\t20\t4\t101\nu3\t20\t4\t1\n", 3, ["user id"]),
    ("ml-100k", "ml-100k/u.data", "1\t10\t3\t100\n2\t2.5\t4\t101\n", 2, ["item id", "integer"]),
    ("ml-100k", "ml-100k/u.data", "1\t10\t3\t100\n2\t20\tgood\t101\n", 2, ["rating", "number"]),
    ("ml-100k", "ml-100k/u.data", "1\t10\t3\t100\n2\t20\tnan\t101\n", 2, ["rating", "finite"]),
    ("ml-100k", "ml-100k/u.data", "1\t10\t3\t100\n2\t20\t\t101\n", 2, ["empty rating"]),
    ("ml-100k", "ml-100k/u.data", "1\t10\t3\t100\n2\t20\t4\tlater\n", 2, ["timestamp"]),
    ("ml-100k", "ml-100k/u.data", "1\t10\t3\t100\n\n2\t20\t4\t101\n", 2, ["empty line"]),
    ("ml-1m", "ml-1m/ratings.dat", "1,10,3,100\n", 1, ["comma", "'::'"]),
    ("ml-1m", "ml-1m/ratings.dat", "1::10::3::100\n2\t20\t4\t101\n", 2, ["tab"]),
    ("ml-1m", "ml-1m/ratings.dat", "1::10::3::100\n2::20::4::101\n3::5::1\n", 3, ["missing"]),
    ("ml-1m", "ml-1m/ratings.dat", "1::10::3::100\n2:::20::4::101\n", 2, ["item id"]),
    ("ml-1m", "ml-1m/ratings_uir_ordered.dat", "1::10::3\n2::20::x\n", 2, ["rating"]),
    ("ml-1m", "ml-1m/ratings_uir_ordered.dat", "1::10::3\n2::20::4::9\n", 2, ["extra"]),
    (
        "ml-latest-small",
        "ml-latest-small/ratings.csv",
        "userId,movieId,rating\n1,10,3.5\n",
        1,
        ["header", "missing column(s): timestamp"],
    ),
    (
        "ml-latest-small",
        "ml-latest-small/ratings.csv",
        "userId,movieId,rating,timestamp,tag\n1,10,3.5,1,x\n",
        1,
        ["extra column(s): tag"],
    ),
    (
        "ml-latest-small",
        "ml-latest-small/ratings.csv",
        "userId\tmovieId\trating\ttimestamp\n1\t10\t3.5\t1\n",
        1,
        ["tab"],
    ),
    (
        "ml-latest-small",
        "ml-latest-small/ratings.csv",
        "userId,movieId,rating,timestamp\n1,10,3.5,1\n1,11,,2\n",
        3,
        ["empty rating"],
    ),
]


@pytest.mark.parametrize(("dataset", "relative", "content", "line", "words"), MALFORMED)
def test_malformed_ratings_file_names_file_and_line(
    write, tmp_path, dataset, relative, content, line, words
):
    # Prepare
    path = write(relative, content)

    # Execute
    with pytest.raises(DataError) as info:
        load_interactions(dataset, tmp_path)

    # Assert
    message = str(info.value)
    assert str(path) in message
    assert f"line {line}:" in message
    for word in words:
        assert word in message
    assert info.value.line == line


@pytest.mark.parametrize(
    ("dataset", "relative", "content"),
    [
        ("ml-100k", "ml-100k/u.data", "1\t10\t3\t100\n2\t20\t4\t101\n1\t10\t5\t102\n"),
        ("ml-1m", "ml-1m/ratings.dat", "1::10::3::100\n2::20::4::101\n1::10::5::102\n"),
        (
            "ml-latest-small",
            "ml-latest-small/ratings.csv",
            "userId,movieId,rating,timestamp\n1,10,3.5,100\n2,20,4.0,101\n1,10,5.0,102\n",
        ),
    ],
)
def test_duplicate_pair_names_both_lines(write, tmp_path, dataset, relative, content):
    # Prepare
    path = write(relative, content)
    header = 1 if relative.endswith(".csv") else 0

    # Execute
    with pytest.raises(DataError) as info:
        load_interactions(dataset, tmp_path)

    # Assert
    message = str(info.value)
    assert str(path) in message
    assert f"line {3 + header}:" in message
    assert f"line {1 + header}" in message.split(":", 2)[-1]
    assert "duplicate" in message


@pytest.mark.parametrize("content", ["", "\n\n", "   \r\n"])
def test_empty_file_is_reported(write, tmp_path, content):
    # Prepare
    path = write("ml-100k/u.data", content)

    # Execute
    with pytest.raises(DataError) as info:
        load_interactions("ml-100k", tmp_path)

    # Assert
    assert str(path) in str(info.value) and "empty file" in str(info.value)


def test_header_only_csv_is_reported_empty(write, tmp_path):
    # Prepare
    path = write("ml-latest-small/ratings.csv", "userId,movieId,rating,timestamp\r\n")

    # Execute
    with pytest.raises(DataError) as info:
        load_interactions("ml-latest-small", tmp_path)

    # Assert
    assert str(path) in str(info.value) and "only a header" in str(info.value)


@pytest.mark.parametrize(
    ("dataset", "relative", "content"),
    [
        ("ml-100k", "ml-100k/u.data", GOOD_UDATA),
        ("ml-1m", "ml-1m/ratings.dat", GOOD_ML1M),
        ("ml-latest-small", "ml-latest-small/ratings.csv", GOOD_CSV),
    ],
)
def test_crlf_and_trailing_blank_lines_are_accepted(write, tmp_path, dataset, relative, content):
    # Prepare
    lf_dir, crlf_dir = tmp_path / "lf", tmp_path / "crlf"
    write(f"lf/{relative}", content)
    write(f"crlf/{relative}", content.replace("\n", "\r\n") + "\r\n\r\n")

    # Execute
    lf = load_interactions(dataset, lf_dir)
    crlf = load_interactions(dataset, crlf_dir)

    # Assert
    assert len(crlf.df) == 3
    assert crlf.df.equals(lf.df)


def test_crlf_file_error_reports_correct_line(write, tmp_path):
    # Prepare
    path = write("ml-100k/u.data", "1\t10\t3\t100\r\n2\t20\t4\t101\r\n3\t30\tbad\t102\r\n")

    # Execute
    with pytest.raises(DataError) as info:
        load_interactions("ml-100k", tmp_path)

    # Assert
    assert f"{path}, line 3:" in str(info.value)


def test_errors_hide_pandas_tracebacks(write, tmp_path):
    # Prepare
    write("ml-100k/u.data", "1\t10\t3\t100\n2\t20\t4\n")

    # Execute
    with pytest.raises(DataError) as info:
        load_interactions("ml-100k", tmp_path)

    # Assert
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ or info.value.__context__ is None


@pytest.mark.parametrize(
    ("relative", "content", "line", "word"),
    [
        ("ml-100k/u.item", "10|A (1995)|01-Jan-1995||url" + "|0" * 19 + "\n20|B|x\n", 2, "24"),
        ("ml-100k/u.item", "10|A (1995)|01-Jan-1995||url" + "|0" * 18 + "|2\n", 1, "0 or 1"),
        ("ml-100k/u.item", "10|A|d||u" + "|0" * 19 + "\n10|B|d||u" + "|0" * 19 + "\n", 2, "line 1"),
    ],
)
def test_malformed_u_item_names_file_and_line(write, tmp_path, relative, content, line, word):
    # Prepare
    write("ml-100k/u.data", GOOD_UDATA)
    path = write(relative, content)

    # Execute
    with pytest.raises(DataError) as info:
        load_interactions("ml-100k", tmp_path)

    # Assert
    assert f"{path}, line {line}:" in str(info.value)
    assert word in str(info.value)


def test_unknown_genre_in_movies_dat_names_line(write, tmp_path):
    # Prepare
    write("ml-1m/ratings.dat", GOOD_ML1M)
    path = write("ml-1m/movies.dat", "10::A (1990)::Drama\n20::B (1991)::Drama|Space Opera\n")

    # Execute
    with pytest.raises(DataError) as info:
        load_interactions("ml-1m", tmp_path)

    # Assert
    assert f"{path}, line 2:" in str(info.value) and "Space Opera" in str(info.value)


def test_bad_movies_csv_header_names_line_1(write, tmp_path):
    # Prepare
    write("ml-latest-small/ratings.csv", GOOD_CSV)
    path = write("ml-latest-small/movies.csv", "id,title\n10,A\n")

    # Execute
    with pytest.raises(DataError) as info:
        load_interactions("ml-latest-small", tmp_path)

    # Assert
    assert f"{path}, line 1:" in str(info.value)
