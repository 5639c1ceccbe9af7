//! The expansion of `#[pgclone::test]`: the user's function, kept as it is under a private name,
//! and a plain `#[test] fn` that hands it to `pgclone::__private::run_async` (or `run_sync`).

use proc_macro2::TokenStream;
use quote::quote;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, ExprPath, ItemFn, Lit, Meta, MetaNameValue, Token};

/// The arguments, checked.
struct Args {
    golden: Option<ExprPath>,
    database_mode: bool,
    multi_thread: Option<bool>,
    /// The count, and the argument to point at if the flavor turns out not to allow it.
    worker_threads: Option<(usize, MetaNameValue)>,
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
        database_mode: false,
        multi_thread: None,
        worker_threads: None,
    };
    let mut seen: Vec<String> = Vec::new();
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args)?;
    for meta in metas {
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
            "mode" => {
                parsed.database_mode = match string(&pair.value)?.as_str() {
                    "cluster" => false,
                    "database" => true,
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
                    "unknown argument; expected `golden`, `mode`, `flavor` or `worker_threads`",
                ))
            }
        }
        seen.push(name);
    }
    Ok(parsed)
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
    let mode = if args.database_mode {
        quote!(::pgclone::Mode::Database)
    } else {
        quote!(::pgclone::Mode::Cluster)
    };
    let multi_thread = args.multi_thread.unwrap_or(false);
    let workers = match args.worker_threads.map(|(n, _)| n) {
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
    let types_check = types_check(signature);
    Ok(quote! {
        #golden_check
        #types_check
        #[::core::prelude::v1::test]
        #(#attrs)*
        #visibility fn #name() {
            #inner
            let #test_fn: fn(#(#holes),*) -> _ = __pgclone_test;
            ::pgclone::__private::#run(
                ::pgclone::__private::TestSpec {
                    name: ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#name)),
                    golden: #golden,
                    mode: #mode,
                    multi_thread: #multi_thread,
                    worker_threads: #workers,
                    should_panic: #should_panic,
                },
                #test_fn,
            )
        }
    })
}

/// Outside `cargo test` the `#[test] fn` is compiled out, and with it the call that checks the
/// parameter and return types: check them there too (each error pointing at its type), and only
/// there, so that `cargo test` reports each once.
fn types_check(signature: &syn::Signature) -> TokenStream {
    use quote::quote_spanned;
    use syn::spanned::Spanned;
    let types: Vec<&syn::Type> = signature
        .inputs
        .iter()
        .filter_map(|input| match input {
            syn::FnArg::Typed(typed) => Some(&*typed.ty),
            syn::FnArg::Receiver(_) => None,
        })
        .collect();
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
    quote! {
        #[cfg(not(test))]
        const _: () = {
            fn __pgclone_accepts<T: ::pgclone::TestArg>() {}
            fn __pgclone_returns<T: ::pgclone::__private::TestOutcome>() {}
            fn __pgclone_check() {
                #argument
                #outcome
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
}
