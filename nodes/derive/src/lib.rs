//! Derives for swapgraph's typed node declarations: `#[derive(Params)]` turns a struct into a
//! node's parameter list and reads it back from the node's arguments; `#[derive(Choice)]` turns
//! a fieldless enum into a parameter's list of choices.
//!
//! A param is declared once, as a field: its doc comment is the description users read, its type
//! gives the kind (`Option<T>` makes it optional: left out means off), and `#[param(...)]` adds a
//! default, bounds, a multi-line text area, the folder a file name is read from, a text rule, or
//! `flatten` for a group of params declared by another struct.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::{quote, ToTokens};
use syn::ext::IdentExt;
use syn::{parse_macro_input, Data, DeriveInput, Expr, Fields, Ident, LitStr};

/// Implements `swapgraph_node_api::Params` for a struct with named fields.
#[proc_macro_derive(Params, attributes(param))]
pub fn derive_params(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    params(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Implements `swapgraph_node_api::Choice` for a fieldless enum; each variant's name is its
/// snake_case spelling unless `#[choice(name = "...")]` gives another.
#[proc_macro_derive(Choice, attributes(choice))]
pub fn derive_choice(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    choice(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// What `#[param(...)]` says about one field.
#[derive(Default)]
struct ParamAttributes {
    default: Option<Expr>,
    min: Option<Expr>,
    max: Option<Expr>,
    multiline: bool,
    reads: Option<Ident>,
    rule: Option<Expr>,
    flatten: bool,
}

fn params(input: &DeriveInput) -> syn::Result<Tokens> {
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new_spanned(input, "Params is derived for structs"));
    };
    let Fields::Named(fields) = &data.fields else {
        return Err(syn::Error::new_spanned(
            input,
            "Params needs named fields: each name is a param's",
        ));
    };
    let api = quote!(::swapgraph_node_api);
    let mut specs = Vec::new();
    let mut reads = Vec::new();
    for field in &fields.named {
        let ident = field.ident.as_ref().expect("named field");
        let ty = &field.ty;
        let attributes = param_attributes(&field.attrs)?;
        if attributes.flatten {
            specs.push(quote! { specs.extend(<#ty as #api::Params>::specs()); });
            reads.push(quote! { #ident: <#ty as #api::Params>::from_args(args)? });
            continue;
        }
        // `r#type` is the param `type`.
        let name = LitStr::new(&ident.unraw().to_string(), ident.span());
        let description = doc_comment(&field.attrs).ok_or_else(|| {
            syn::Error::new_spanned(ident, "a param needs a doc comment: it is the description users read")
        })?;
        let some = |value: &Option<Expr>| match value {
            Some(expr) => quote!(::core::option::Option::Some(#expr)),
            None => quote!(::core::option::Option::None),
        };
        let (default, min, max) = (some(&attributes.default), some(&attributes.min), some(&attributes.max));
        let multiline = attributes.multiline;
        let mut spec = quote! {
            #api::ParamSpec::new(
                #name,
                <#ty as #api::ParamType>::kind(#api::Declared { default: #default, min: #min, max: #max, multiline: #multiline }),
                #description,
            )
        };
        if let Some(folder) = &attributes.reads {
            spec = quote!(#spec.reads_file(#api::FileFolder::#folder));
        }
        if let Some(rule) = &attributes.rule {
            spec = quote!(#spec.rule(#rule));
        }
        spec = quote!(<#ty as #api::ParamType>::declare(#spec));
        specs.push(quote! { specs.push(#spec); });
        reads.push(quote! { #ident: args.param::<#ty>(#name)? });
    }
    let (impl_generics, type_generics, where_clause) = input.generics.split_for_impl();
    let ident = &input.ident;
    Ok(quote! {
        impl #impl_generics #api::Params for #ident #type_generics #where_clause {
            fn specs() -> ::std::vec::Vec<#api::ParamSpec> {
                let mut specs = ::std::vec::Vec::new();
                #(#specs)*
                specs
            }

            fn from_args(args: &#api::Args) -> ::core::result::Result<Self, #api::NodeError> {
                ::core::result::Result::Ok(Self { #(#reads,)* })
            }
        }
    })
}

fn param_attributes(attrs: &[syn::Attribute]) -> syn::Result<ParamAttributes> {
    let mut found = ParamAttributes::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("param")) {
        attr.parse_nested_meta(|meta| {
            let key = meta.path.get_ident().map(ToString::to_string).unwrap_or_default();
            match key.as_str() {
                "default" => found.default = Some(meta.value()?.parse()?),
                "min" => found.min = Some(meta.value()?.parse()?),
                "max" => found.max = Some(meta.value()?.parse()?),
                "rule" => found.rule = Some(meta.value()?.parse()?),
                "reads" => found.reads = Some(meta.value()?.parse()?),
                "multiline" => found.multiline = true,
                "flatten" => found.flatten = true,
                _ => {
                    return Err(meta.error(
                        "unknown param attribute: expected default, min, max, multiline, reads, rule or flatten",
                    ))
                }
            }
            Ok(())
        })?;
    }
    Ok(found)
}

/// The doc comment's lines joined into one sentence-like string.
fn doc_comment(attrs: &[syn::Attribute]) -> Option<String> {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(text),
                    ..
                }) => Some(text.value().trim().to_string()),
                _ => None,
            },
            _ => None,
        })
        .filter(|line| !line.is_empty())
        .collect();
    (!lines.is_empty()).then(|| lines.join(" "))
}

fn choice(input: &DeriveInput) -> syn::Result<Tokens> {
    let Data::Enum(data) = &input.data else {
        return Err(syn::Error::new_spanned(input, "Choice is derived for enums"));
    };
    let mut names = Vec::new();
    let mut variants = Vec::new();
    for variant in &data.variants {
        if !matches!(variant.fields, Fields::Unit) {
            return Err(syn::Error::new_spanned(variant, "a Choice variant has no fields"));
        }
        let mut name = snake_case(&variant.ident.to_string());
        for attr in variant.attrs.iter().filter(|a| a.path().is_ident("choice")) {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("name") {
                    name = meta.value()?.parse::<LitStr>()?.value();
                    Ok(())
                } else {
                    Err(meta.error("expected name = \"...\""))
                }
            })?;
        }
        names.push(LitStr::new(&name, variant.ident.span()));
        variants.push(variant.ident.to_token_stream());
    }
    let ident = &input.ident;
    let api = quote!(::swapgraph_node_api);
    Ok(quote! {
        impl #api::Choice for #ident {
            const NAMES: &'static [&'static str] = &[#(#names),*];

            fn from_name(name: &str) -> ::core::option::Option<Self> {
                match name {
                    #(#names => ::core::option::Option::Some(Self::#variants),)*
                    _ => ::core::option::Option::None,
                }
            }

            fn name(self) -> &'static str {
                match self {
                    #(Self::#variants => #names,)*
                }
            }
        }
    })
}

/// `DpmPP2M` -> `dpm_pp2_m`; variants whose snake_case is not the name users know say so with
/// `#[choice(name = "...")]`.
fn snake_case(ident: &str) -> String {
    let mut out = String::new();
    for (i, c) in ident.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.extend(c.to_lowercase());
    }
    out
}
