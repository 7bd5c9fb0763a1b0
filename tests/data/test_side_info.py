"""Item tables: release years from titles and ML-100K dates; Last.FM artist names."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedrec.data.errors import DataError
from fedrec.data.side_info import (
    align_items,
    parse_release_year,
    parse_title_year,
    read_artists_dat,
    read_movies_dat,
    read_u_item,
)


@pytest.mark.parametrize(
    ("title", "year"),
    [
        ("Toy Story (1995)", 1995.0),
        ("City of Lost Children, The (Cité des enfants perdus, La) (1995)", 1995.0),
        ("Shanghai Triad (Yao a yao yao dao waipo qiao) (1995) ", 1995.0),
        ("Death Note: Desu nôto (2006\u20132007)", 2006.0),
        ("Babylon 5", math.nan),
        ("Mission: Impossible (1996) 2", math.nan),
        ("2001: A Space Odyssey", math.nan),
        ("Future (9999)", math.nan),
        ("", math.nan),
    ],
)
def test_year_from_title(title, year):
    # Execute
    got = parse_title_year(title)

    # Assert
    assert got == year or (math.isnan(got) and math.isnan(year))


@pytest.mark.parametrize(
    ("date", "title", "year"),
    [
        ("22-Jan-1996", "Richard III (1995)", 1996.0),
        ("", "Richard III (1995)", 1995.0),
        ("someday", "Richard III (1995)", 1995.0),
        ("", "unknown", math.nan),
    ],
)
def test_release_year_prefers_the_date_and_falls_back_to_the_title(date, title, year):
    # Execute
    got = parse_release_year(date, title)

    # Assert
    assert got == year or (math.isnan(got) and math.isnan(year))


def test_u_item_and_movies_dat_give_years(write):
    # Prepare
    flags = "|".join(["0"] * 18 + ["1"])
    u_item = write(
        "u.item",
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags}\n"
        f"2|Late (1990)|03-Mar-1991||http://x|{flags}\n"
        f"267|unknown||||{flags}\n",
    )
    movies = write("movies.dat", "1::Toy Story (1995)::Comedy\n2::No Year::Drama\n")

    # Execute
    from_u_item = read_u_item(u_item)
    from_movies = read_movies_dat(movies)

    # Assert
    assert from_u_item.years.dtype == np.float32
    assert from_u_item.years[:2].tolist() == [1995.0, 1991.0] and np.isnan(from_u_item.years[2])
    assert from_movies.years[0] == 1995.0 and np.isnan(from_movies.years[1])


def test_align_items_fills_features_in_place(write):
    # Prepare
    table = read_movies_dat(write("movies.dat", "1::A (1990)::Comedy\n2::B (2000)::Drama\n"))

    # Execute
    features = align_items(table, np.array([2, 3, 1]))

    # Assert
    assert features.titles == ["B (2000)", "", "A (1990)"]
    assert features.genre_names[:2] == ("Action", "Adventure")
    assert features.genres[1].sum() == 0 and features.genres[2].sum() == 1
    assert features.year[0] == 2000 and np.isnan(features.year[1])
    features.check(3)


def test_artists_dat_gives_names_without_genres_or_years(write):
    # Prepare
    path = write(
        "artists.dat",
        "id\tname\turl\tpictureURL\n1\tMALICE MIZER\thttp://a\thttp://b\n2\tDiary\thttp://c\t\n",
    )

    # Execute
    table = read_artists_dat(path)
    features = align_items(table, np.array([2, 1]))

    # Assert
    assert table.raw_ids.tolist() == [1, 2] and table.genres is None and table.years is None
    assert features.titles == ["Diary", "MALICE MIZER"]
    assert features.available() == ["title"]


@pytest.mark.parametrize(
    ("content", "line", "words"),
    [
        ("name\tid\n", 1, "expected the header id<TAB>name<TAB>url<TAB>pictureURL"),
        ("id\tname\turl\tpictureURL\nx\tA\tu\tp\n", 2, "artist id must be an integer"),
        ("id\tname\turl\tpictureURL\n1\n", 2, "expected tab-separated fields"),
        ("id\tname\turl\tpictureURL\n1\tA\tu\tp\n1\tB\tu\tp\n", 3, "already appears on line 2"),
    ],
)
def test_malformed_artists_dat_names_file_and_line(write, content, line, words):
    # Prepare
    path = write("artists.dat", content)

    # Execute
    with pytest.raises(DataError) as info:
        read_artists_dat(path)

    # Assert
    assert str(info.value).startswith(f"{path}, line {line}: ") and words in str(info.value)
