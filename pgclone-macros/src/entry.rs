//! The expansion of `#[pgclone::test]`: the user's function, kept as it is under a private name,
//! and a plain `#[test] fn` that hands it to `pgclone::__private::run_async` (or `run_sync`).

use proc_macro2::TokenStream;
use quote::quote;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, ExprPath, ItemFn, Lit, LitStr, Meta, MetaNameValue, Token};

/// The arguments, checked.
struct Args {
    golden: Option<ExprPath>,
    /// `mode = ...`; `None`: `PGCLONE_MODE` or the argument type's default decides.
    database_mode: Option<bool>,
    migrations: Migrations,
    /// `fixtures(...)`, in order: each the path `include_str!` reads, relative to the test's
    /// source file, as `#[sqlx::test]` resolves them.
    fixtures: Vec<LitStr>,
    multi_thread: Option<bool>,
    /// The count, and the argument to point at if the flavor turns out not to allow it.
    worker_threads: Option<(usize, MetaNameValue)>,
}

/// `#[sqlx::test]`'s migration arguments, with its meaning.
enum Migrations {
    /// None given: `./migrations` of the crate when it exists (the library applies it to tests
    /// taking a sqlx type).
    Inferred,
    /// `migrations = false`.
    Off,
    /// `migrations = "dir"`, relative to the crate's directory.
    Dir(LitStr),
    /// `migrator = "path::TO_MIGRATOR"`.
    Migrator(syn::Path),
}

pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(e) => return with_error(item, e),
    };
    match parse_args(args).and_then(|args| expand(&function, args)) {
        Ok(tokens) => tokens,
        // Keep the function so that IDEs and other errors still see it.
        Err(e) => with_error(quote!(#function), e),
    }
}

fn parse_args(args: TokenStream) -> syn::Result<Args> {
    let mut parsed = Args {
        golden: None,
        database_mode: None,
        migrations: Migrations::Inferred,
        fixtures: Vec::new(),
        multi_thread: None,
        worker_threads: None,
    };
    let mut seen: Vec<String> = Vec::new();
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args)?;
    for meta in metas {
        if meta.path().is_ident("fixtures") {
            let Meta::List(list) = &meta else {
                return Err(syn::Error::new_spanned(
                    meta,
                    "`fixtures` lists files: `fixtures(\"users\", \"posts\")` or `fixtures(path = \"dir\", scripts(\"users\"))`",
                ));
            };
            parsed.fixtures.extend(fixtures(list)?);
            continue;
        }
        let Meta::NameValue(pair) = &meta else {
            return Err(syn::Error::new_spanned(
                meta,
                "expected `name = value`, e.g. `golden = app`",
            ));
        };
        let name = pair
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        // A second value would silently win over the first: refuse it, as `#[tokio::test]` does.
        let migration_argument = name == "migrations" || name == "migrator";
        if migration_argument && seen.iter().any(|s| s == "migrations" || s == "migrator") {
            return Err(syn::Error::new_spanned(
                &pair.path,
                "give one of `migrations` and `migrator`, once",
            ));
        }
        if seen.contains(&name) {
            return Err(syn::Error::new_spanned(
                &pair.path,
                format!("`{name}` is given twice; keep one"),
            ));
        }
        match name.as_str() {
            "golden" => match &pair.value {
                Expr::Path(path) => parsed.golden = Some(path.clone()),
                other => return Err(syn::Error::new_spanned(
                    other,
                    "`golden` takes the path of a `fn() -> pgclone::Golden`, e.g. `golden = app`",
                )),
            },
            "migrations" => {
                parsed.migrations = match &pair.value {
                    Expr::Lit(ExprLit {
                        lit: Lit::Bool(off), ..
                    }) if !off.value => Migrations::Off,
                    Expr::Lit(ExprLit {
                        lit: Lit::Str(dir), ..
                    }) => Migrations::Dir(dir.clone()),
                    other => {
                        return Err(syn::Error::new_spanned(
                            other,
                            "`migrations` is a directory of sqlx migrations, relative to the crate (`migrations = \"db/migrations\"`), or `false` for none",
                        ))
                    }
                }
            }
            "migrator" => {
                let Expr::Lit(ExprLit {
                    lit: Lit::Str(path), ..
                }) = &pair.value
                else {
                    return Err(syn::Error::new_spanned(&pair.value, "expected a string literal"));
                };
                // Parsed from the literal, so that an error about the path points at it.
                let path: syn::Path = path.parse().map_err(|_| {
                    syn::Error::new_spanned(
                        &pair.value,
                        "`migrator` is the path of a sqlx `Migrator` static, e.g. `migrator = \"crate::MIGRATOR\"`",
                    )
                })?;
                parsed.migrations = Migrations::Migrator(path);
            }
            "mode" => {
                parsed.database_mode = match string(&pair.value)?.as_str() {
                    "cluster" => Some(false),
                    "database" => Some(true),
                    _ => {
                        return Err(syn::Error::new_spanned(
                            &pair.value,
                            "`mode` is \"cluster\" or \"database\"",
                        ))
                    }
                }
            }
            "flavor" => {
                parsed.multi_thread = Some(match string(&pair.value)?.as_str() {
                    "current_thread" => false,
                    "multi_thread" => true,
                    _ => {
                        return Err(syn::Error::new_spanned(
                            &pair.value,
                            "`flavor` is \"current_thread\" or \"multi_thread\"",
                        ))
                    }
                })
            }
            "worker_threads" => {
                let Expr::Lit(ExprLit {
                    lit: Lit::Int(n), ..
                }) = &pair.value
                else {
                    return Err(syn::Error::new_spanned(
                        &pair.value,
                        "`worker_threads` takes a number",
                    ));
                };
                let n: usize = n.base10_parse()?;
                if n == 0 {
                    return Err(syn::Error::new_spanned(
                        &pair.value,
                        "`worker_threads` must be at least 1",
                    ));
                }
                parsed.worker_threads = Some((n, pair.clone()));
            }
            _ => {
                return Err(syn::Error::new_spanned(
                    &pair.path,
                    "unknown argument; expected `golden`, `mode`, `migrations`, `migrator`, `fixtures`, `flavor` or `worker_threads`",
                ))
            }
        }
        seen.push(name);
    }
    if let (Some(golden), true) = (
        &parsed.golden,
        !matches!(parsed.migrations, Migrations::Inferred),
    ) {
        return Err(syn::Error::new_spanned(
            golden,
            "`golden` is a whole recipe: put its migrations in it (`Golden::sqlx_migrations`) instead of `migrations`/`migrator` here; `fixtures` may go on top of it",
        ));
    }
    Ok(parsed)
}

/// `fixtures("a", "b")` (files `fixtures/a.sql` beside the test's source file), `fixtures("../x.sql",
/// ...)` (paths: every name has a `/`) or `fixtures(path = "dir", scripts("a", "b"))`, as
/// `#[sqlx::test]` reads them; a name without an extension gets `.sql`.
fn fixtures(list: &syn::MetaList) -> syn::Result<Vec<LitStr>> {
    let with_extension = |name: &LitStr, dir: &str| {
        let mut file = name.value();
        if std::path::Path::new(&file).extension().is_none() {
            file.push_str(".sql");
        }
        LitStr::new(&format!("{dir}/{file}"), name.span())
    };
    // The `path = ..., scripts(...)` form first; failing that, a list of strings.
    let mut dir: Option<LitStr> = None;
    let mut scripts: Vec<LitStr> = Vec::new();
    let nested = list.parse_nested_meta(|meta| {
        if meta.path.is_ident("path") {
            if dir.is_some() || !scripts.is_empty() {
                return Err(meta.error("`path` comes once, before `scripts`"));
            }
            dir = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("scripts") {
            let content;
            syn::parenthesized!(content in meta.input);
            scripts.extend(Punctuated::<LitStr, Token![,]>::parse_terminated(&content)?);
        } else {
            return Err(meta.error("expected `path = \"dir\"` or `scripts(\"name\", ...)`"));
        }
        Ok(())
    });
    if nested.is_ok() {
        let Some(dir) = dir else {
            return Err(syn::Error::new_spanned(
                list,
                "`scripts(...)` needs `path = \"dir\"` before it",
            ));
        };
        return Ok(scripts
            .iter()
            .map(|name| with_extension(name, &dir.value()))
            .collect());
    }
    let names = list.parse_args_with(Punctuated::<LitStr, Token![,]>::parse_terminated)?;
    let is_path = |name: &LitStr| std::path::Path::new(&name.value()).components().count() > 1;
    let paths = names.iter().filter(|name| is_path(name)).count();
    if paths != 0 && paths != names.len() {
        let odd = names
            .iter()
            .find(|name| !is_path(name))
            .unwrap_or(&names[0]);
        return Err(syn::Error::new_spanned(
            odd,
            "give either names (`\"users\"`: fixtures/users.sql beside the test) or paths (`\"../fixtures/users.sql\"`), not both",
        ));
    }
    Ok(names
        .iter()
        .map(|name| match is_path(name) {
            true => name.clone(),
            false => with_extension(name, "fixtures"),
        })
        .collect())
}

fn string(value: &Expr) -> syn::Result<String> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s.value()),
        other => Err(syn::Error::new_spanned(other, "expected a string literal")),
    }
}

fn expand(function: &ItemFn, args: Args) -> syn::Result<TokenStream> {
    let signature = &function.sig;
    if let Some(attr) = function.attrs.iter().find(|a| a.path().is_ident("test")) {
        return Err(syn::Error::new_spanned(
            attr,
            "second test attribute: #[pgclone::test] already makes this a test",
        ));
    }
    // Which types are accepted is the library's business (its `TestArg` trait); only the count
    // is checked here, to pick the fn pointer type.
    if signature.inputs.len() > 2 {
        return Err(syn::Error::new_spanned(
            &signature.inputs,
            "a #[pgclone::test] function takes at most two arguments: none, its database \
             (`db: pgclone::TestDb`, `pool: sqlx::PgPool`, ...: see `pgclone::TestArg`), or \
             sqlx's `PgPoolOptions, PgConnectOptions`",
        ));
    }
    if !signature.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &signature.generics,
            "a #[pgclone::test] function cannot be generic",
        ));
    }
    let is_async = signature.asyncness.is_some();
    if !is_async && (args.multi_thread.is_some() || args.worker_threads.is_some()) {
        return Err(syn::Error::new_spanned(
            signature.fn_token,
            "`flavor` and `worker_threads` are for async tests",
        ));
    }
    // Checked after the sync-test error, which is the one to fix first. Without a flavor an async
    // test runs on a current-thread runtime, which has no workers to count.
    if let Some((_, pair)) = &args.worker_threads {
        if args.multi_thread != Some(true) {
            return Err(syn::Error::new_spanned(
                pair,
                "`worker_threads` is only for `flavor = \"multi_thread\"`: add that flavor or remove `worker_threads`",
            ));
        }
    }

    let name = &signature.ident;
    let visibility = &function.vis;
    let attrs = &function.attrs;
    let should_panic = attrs.iter().any(|a| a.path().is_ident("should_panic"));
    let mut inner = function.clone();
    inner.sig.ident = syn::Ident::new("__pgclone_test", name.span());
    inner
        .attrs
        .retain(|a| a.path().is_ident("allow") || a.path().is_ident("expect"));
    inner.vis = syn::Visibility::Inherited;

    let golden = match &args.golden {
        Some(path) => quote!(::core::option::Option::Some(#path as fn() -> ::pgclone::Golden)),
        None => quote!(::core::option::Option::None),
    };
    // Checked outside the test function too, so that a wrong `golden` is an error (pointing at
    // it) in every build, not only under `cargo test`.
    let golden_check = args.golden.as_ref().map(|path| {
        quote::quote_spanned!(syn::spanned::Spanned::span(path) => const _: fn() -> ::pgclone::Golden = #path;)
    });
    let mode = match args.database_mode {
        Some(true) => quote!(::core::option::Option::Some(::pgclone::Mode::Database)),
        Some(false) => quote!(::core::option::Option::Some(::pgclone::Mode::Cluster)),
        None => quote!(::core::option::Option::None),
    };
    // Paths are made absolute here, from the crate's directory at compile time, as
    // `#[sqlx::test]` resolves them; whether `./migrations` exists is the library's question.
    let migrations = match &args.migrations {
        Migrations::Inferred if signature.inputs.is_empty() || args.golden.is_some() => {
            quote!(::pgclone::__private::Migrations::None)
        }
        Migrations::Inferred => quote!(::pgclone::__private::Migrations::IfExists(
            ::core::concat!(::core::env!("CARGO_MANIFEST_DIR"), "/migrations")
        )),
        Migrations::Off => quote!(::pgclone::__private::Migrations::None),
        Migrations::Dir(dir) => quote!(::pgclone::__private::Migrations::Dir(
            ::core::concat!(::core::env!("CARGO_MANIFEST_DIR"), "/", #dir)
        )),
        Migrations::Migrator(path) => {
            quote::quote_spanned!(syn::spanned::Spanned::span(path)=> ::pgclone::__private::Migrations::Migrator(
                ::pgclone::__private::sqlx_migrator(&#path)
            ))
        }
    };
    // Read by the compiler, relative to the test's source file: a missing file is a compile
    // error naming it, pointing at the fixture's name.
    let fixtures = args.fixtures.iter().map(|path| {
        quote::quote_spanned!(path.span()=> ::pgclone::__private::Fixture {
            path: #path,
            sql: ::core::include_str!(#path),
        })
    });
    let multi_thread = args.multi_thread.unwrap_or(false);
    let workers = match args.worker_threads.as_ref().map(|(n, _)| *n) {
        Some(n) => quote!(::core::option::Option::Some(#n)),
        None => quote!(::core::option::Option::None),
    };
    let run = if is_async {
        quote!(run_async)
    } else {
        quote!(run_sync)
    };
    // The function as a fn pointer, whose type's impls of `AsyncTestFn`/`SyncTestFn` take the
    // argument types the library accepts; an error about them points at the parameters.
    let holes = signature.inputs.iter().map(|_| quote!(_));
    let at = match signature.inputs.is_empty() {
        true => signature.ident.span(),
        false => syn::spanned::Spanned::span(&signature.inputs),
    };
    let test_fn = quote::quote_spanned!(at=> __pgclone_test_fn);
    let types_check = types_check(signature, &args);
    let argument = argument_type(signature);
    Ok(quote! {
        #golden_check
        #types_check
        #[::core::prelude::v1::test]
        #(#attrs)*
        #visibility fn #name() {
            #inner
            fn __pgclone_spec() -> ::pgclone::__private::TestSpec {
                ::pgclone::__private::TestSpec {
                    name: ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#name)),
                    golden: #golden,
                    mode: #mode,
                    migrations: #migrations,
                    fixtures: &[#(#fixtures),*],
                    multi_thread: #multi_thread,
                    worker_threads: #workers,
                    should_panic: #should_panic,
                }
            }
            fn __pgclone_argument() -> ::core::option::Option<::pgclone::__private::ArgumentKind> {
                #[allow(unused_imports)]
                use ::pgclone::__private::{KnownArgument as _, UnknownArgument as _};
                (&&::pgclone::__private::Argument::<#argument>::new()).kind()
            }
            // Seen by the binary's other tests before any runs (`harness/library.rs`).
            #[::pgclone::__private::linkme::distributed_slice(::pgclone::__private::TESTS)]
            #[linkme(crate = ::pgclone::__private::linkme)]
            static __PGCLONE_TEST: ::pgclone::__private::Registered = ::pgclone::__private::Registered {
                spec: __pgclone_spec,
                argument: __pgclone_argument,
            };
            let #test_fn: fn(#(#holes),*) -> _ = __pgclone_test;
            ::pgclone::__private::#run(__pgclone_spec(), #test_fn)
        }
    })
}

/// The type whose `TestArg` impl describes the test's argument: `()` for none, the tuple for
/// two (as the library's impls take them).
fn argument_type(signature: &syn::Signature) -> TokenStream {
    match parameter_types(signature).as_slice() {
        [one] => quote!(#one),
        many => quote!((#(#many),*)),
    }
}

/// The types of the function's parameters, in order.
fn parameter_types(signature: &syn::Signature) -> Vec<&syn::Type> {
    signature
        .inputs
        .iter()
        .filter_map(|input| match input {
            syn::FnArg::Typed(typed) => Some(&*typed.ty),
            syn::FnArg::Receiver(_) => None,
        })
        .collect()
}

/// Outside `cargo test` the `#[test] fn` is compiled out, and with it the call that checks the
/// parameter and return types, the `migrator` and the fixture files: check them there too (each
/// error pointing at its cause), and only there, so that `cargo test` reports each once.
fn types_check(signature: &syn::Signature, args: &Args) -> TokenStream {
    use quote::quote_spanned;
    use syn::spanned::Spanned;
    let types = parameter_types(signature);
    let argument = match types.as_slice() {
        [] => None,
        [one] => Some(quote_spanned!(one.span()=> __pgclone_accepts::<#one>();)),
        [a, b] => {
            let span = signature.inputs.span();
            Some(quote_spanned!(span=> __pgclone_accepts::<(#a, #b)>();))
        }
        _ => None,
    };
    let outcome = match &signature.output {
        syn::ReturnType::Default => None,
        syn::ReturnType::Type(_, ty) if matches!(**ty, syn::Type::ImplTrait(_)) => None,
        syn::ReturnType::Type(_, ty) => {
            Some(quote_spanned!(ty.span()=> __pgclone_returns::<#ty>();))
        }
    };
    let migrator = match &args.migrations {
        Migrations::Migrator(path) => Some(quote_spanned!(path.span()=>
            let _ = ::pgclone::__private::sqlx_migrator(&#path);
        )),
        _ => None,
    };
    let fixtures = args
        .fixtures
        .iter()
        .map(|path| quote_spanned!(path.span()=> let _: &str = ::core::include_str!(#path);));
    quote! {
        #[cfg(not(test))]
        const _: () = {
            fn __pgclone_accepts<T: ::pgclone::TestArg>() {}
            fn __pgclone_returns<T: ::pgclone::__private::TestOutcome>() {}
            fn __pgclone_check() {
                #argument
                #outcome
                #migrator
                #(#fixtures)*
            }
        };
    }
}

fn with_error(tokens: TokenStream, error: syn::Error) -> TokenStream {
    let error = error.to_compile_error();
    quote!(#tokens #error)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every rejected argument list still expands to the user's function (so IDEs and other
    /// errors see it) plus one `compile_error!` with the message.
    #[test]
    fn bad_arguments_keep_the_function_and_add_a_compile_error() {
        let cases = [
            (
                quote!(worker_threads = 2),
                "`worker_threads` is only for `flavor",
            ),
            (
                quote!(flavor = "current_thread", worker_threads = 2),
                "`worker_threads` is only for `flavor",
            ),
            (
                quote!(flavor = "multi_thread", worker_threads = 0),
                "must be at least 1",
            ),
            (quote!(golden = a, golden = b), "`golden` is given twice"),
            (
                quote!(mode = "cluster", mode = "database"),
                "`mode` is given twice",
            ),
            (quote!(colour = "red"), "unknown argument"),
            (
                quote!(migrations = "m", migrator = "crate::M"),
                "give one of `migrations` and `migrator`",
            ),
            (quote!(migrations = true), "or `false` for none"),
            (
                quote!(migrator = "not a path"),
                "the path of a sqlx `Migrator`",
            ),
            (
                quote!(golden = app, migrations = "m"),
                "put its migrations in it",
            ),
            (quote!(fixtures("users", "../x.sql")), "not both"),
            (quote!(fixtures(scripts("a"))), "needs `path"),
            (quote!(fixtures = "a"), "`fixtures` lists files"),
        ];
        let function = quote!(
            async fn user_function(_db: pgclone::TestDb) {}
        );
        for (args, message) in cases {
            let out = test(args.clone(), function.clone()).to_string();
            assert!(out.contains("fn user_function"), "{args}: {out}");
            assert!(out.contains("compile_error"), "{args}: {out}");
            assert!(out.contains(message), "{args}: {out}");
            assert!(!out.contains("__private"), "{args}: expanded anyway: {out}");
        }
    }

    #[test]
    fn valid_runtime_arguments_expand() {
        let out = test(
            quote!(flavor = "multi_thread", worker_threads = 2),
            quote!(
                async fn t(_db: pgclone::TestDb) {}
            ),
        )
        .to_string();
        assert!(!out.contains("compile_error"), "{out}");
        assert!(out.contains("run_async"), "{out}");
    }

    /// The fixture forms of `#[sqlx::test]`, resolved as it resolves them.
    #[test]
    fn fixtures_are_resolved_as_sqlx_resolves_them() {
        let resolved = |args: TokenStream| -> Vec<String> {
            let metas = Punctuated::<Meta, Token![,]>::parse_terminated
                .parse2(args)
                .unwrap();
            let Meta::List(list) = &metas[0] else {
                panic!("not a list")
            };
            fixtures(list).unwrap().iter().map(LitStr::value).collect()
        };
        assert_eq!(
            resolved(quote!(fixtures("users", "posts.sql"))),
            ["fixtures/users.sql", "fixtures/posts.sql"]
        );
        assert_eq!(
            resolved(quote!(fixtures("../data/a.sql", "/abs/b.sql"))),
            ["../data/a.sql", "/abs/b.sql"]
        );
        assert_eq!(
            resolved(quote!(fixtures(path = "../common", scripts("a", "b.psql")))),
            ["../common/a.sql", "../common/b.psql"]
        );
    }

    #[test]
    fn sqlx_arguments_expand_to_the_spec() {
        let function = quote!(
            async fn t(_pool: sqlx::PgPool) {}
        );
        let out = |args| test(args, function.clone()).to_string();
        let inferred = out(quote!());
        assert!(inferred.contains("IfExists"), "{inferred}");
        assert!(inferred.contains("\"/migrations\""), "{inferred}");
        assert!(out(quote!(migrations = false)).contains("Migrations :: None"));
        let dir = out(quote!(migrations = "db/m", fixtures("u")));
        assert!(dir.contains("Migrations :: Dir"), "{dir}");
        assert!(dir.contains("include_str ! (\"fixtures/u.sql\")"), "{dir}");
        let migrator = out(quote!(migrator = "crate::MIGRATOR"));
        assert!(
            migrator.contains("sqlx_migrator (& crate :: MIGRATOR)"),
            "{migrator}"
        );
        // No argument, or a golden: nothing inferred.
        let bare = test(
            quote!(),
            quote!(
                async fn t() {}
            ),
        )
        .to_string();
        assert!(!bare.contains("IfExists"), "{bare}");
        let golden = out(quote!(golden = app, fixtures("u")));
        assert!(!golden.contains("IfExists"), "{golden}");
        assert!(!golden.contains("compile_error"), "{golden}");
    }
}
