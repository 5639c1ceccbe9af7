create table books (
    id bigint generated always as identity primary key,
    title text not null,
    author text not null
);

create table loans (
    book_id bigint not null references books,
    member_id bigint not null references members,
    lent_on date not null default current_date,
    returned_on date
);

-- A book is out at most once at a time.
create unique index one_open_loan_per_book on loans (book_id) where returned_on is null;
