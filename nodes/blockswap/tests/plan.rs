//! Swap plans for the real-size SDXL UNet (its unit list costs no memory to build): which blocks
//! each setting swaps, the bytes that stay and stream, and budgets; and for a network of another
//! shape, a plain stack of equal transformer blocks as DiT models have, planned by the same code.

use candle_core::DType;
use proptest::prelude::*;
use swapgraph_blockswap::{plan, Granularity, PlanError, SwapSettings};
use swapgraph_model::{UnitGroup, UnitSpec};
use swapgraph_sdxl::unet::{UNet, UNetConfig};

fn sdxl_units() -> Vec<UnitSpec> {
    UNet::new(UNetConfig::sdxl()).unwrap().units().to_vec()
}

const MIB: u64 = 1024 * 1024;

#[test]
fn the_sdxl_unet_has_the_expected_units_and_size() {
    let units = sdxl_units();
    let parameters: usize = units.iter().map(UnitSpec::parameter_count).sum();
    assert_eq!(parameters, 2_567_463_684, "SDXL base UNet parameter count");
    let (pass, context): (Vec<&UnitSpec>, Vec<&UnitSpec>) = units.iter().partition(|u| u.group.every_pass);
    assert_eq!(
        pass.iter().filter(|u| u.name.contains("transformer_blocks")).count(),
        70
    );
    // Each transformer block's text keys and values (attn2.to_k, attn2.to_v from 2048 wide):
    // 10 blocks 640 wide, 60 blocks 1280 wide.
    assert_eq!(context.len(), 70);
    assert!(context
        .iter()
        .all(|u| u.name.ends_with(".attn2") && u.tensors.len() == 2));
    let context_parameters: usize = context.iter().map(|u| u.parameter_count()).sum();
    assert_eq!(context_parameters, 2 * 2048 * (10 * 640 + 60 * 1280));
    let everything = SwapSettings {
        blocks_to_swap: 0,
        ..SwapSettings::default()
    };
    let resident = plan(&units, DType::F16, &everything).unwrap();
    assert_eq!(resident.swapped_units(), 0);
    assert_eq!(resident.pass_units, pass.len());
    assert_eq!(resident.resident_bytes, 2 * (parameters - context_parameters) as u64);
    assert_eq!(resident.context_bytes, 2 * context_parameters as u64);
}

#[test]
fn context_projections_stay_on_the_host_outside_the_budget() {
    let units = sdxl_units();
    for settings in [
        SwapSettings::default(),
        SwapSettings {
            vram_budget_mb: Some(3072),
            ..SwapSettings::default()
        },
    ] {
        let swap_plan = plan(&units, DType::F16, &settings).unwrap();
        let pass_bytes: u64 = units
            .iter()
            .filter(|u| u.group.every_pass)
            .map(|u| u.bytes(DType::F16))
            .sum();
        assert_eq!(swap_plan.resident_bytes + swap_plan.streamed_bytes, pass_bytes);
        for (unit, &streams) in units.iter().zip(&swap_plan.swapped) {
            assert!(unit.group.every_pass || !streams, "{} streams in every pass", unit.name);
        }
    }
}

#[test]
fn block_counts_swap_the_largest_blocks_of_each_enabled_section() {
    let units = sdxl_units();
    let two = plan(&units, DType::F16, &SwapSettings::default()).unwrap();
    assert_eq!(
        two.swapped_blocks,
        [
            "down_blocks.1",
            "down_blocks.2",
            "mid_block",
            "up_blocks.0",
            "up_blocks.1"
        ]
    );
    let up_only = SwapSettings {
        blocks_to_swap: 1,
        swap_down: false,
        swap_mid: false,
        ..SwapSettings::default()
    };
    assert_eq!(
        plan(&units, DType::F16, &up_only).unwrap().swapped_blocks,
        ["up_blocks.0"]
    );
    let total = two.resident_bytes + two.streamed_bytes;
    let all = plan(
        &units,
        DType::F16,
        &SwapSettings {
            blocks_to_swap: 3,
            ..SwapSettings::default()
        },
    )
    .unwrap();
    assert_eq!(all.resident_bytes + all.streamed_bytes, total);
    assert!(
        all.streamed_bytes > 4 * 1024 * MIB,
        "a full swap streams over 4 GiB in f16"
    );
    assert!(
        all.device_bytes() < 512 * MIB,
        "device weights with a full unit swap: {}",
        all.device_bytes() / MIB
    );
}

#[test]
fn too_many_blocks_names_the_valid_range() {
    let error = plan(
        &sdxl_units(),
        DType::F16,
        &SwapSettings {
            blocks_to_swap: 4,
            ..SwapSettings::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "blocks_to_swap 4 is more than this model's 3 blocks per section; valid range 0..=3"
    );
}

#[test]
fn block_granularity_needs_room_for_the_largest_swapped_block() {
    let units = sdxl_units();
    let settings = SwapSettings {
        blocks_to_swap: 3,
        granularity: Granularity::Block,
        ..SwapSettings::default()
    };
    let whole = plan(&units, DType::F16, &settings).unwrap();
    let by_unit = plan(
        &units,
        DType::F16,
        &SwapSettings {
            blocks_to_swap: 3,
            ..SwapSettings::default()
        },
    )
    .unwrap();
    assert!(whole.buffer_bytes > 1024 * MIB, "up_blocks.0 is about 47% of the UNet");
    assert!(whole.buffer_bytes > 10 * by_unit.buffer_bytes);
}

#[test]
fn budgets_decide_what_streams_and_impossible_budgets_name_the_minimum() {
    let units = sdxl_units();
    for gib in [2u64, 3, 4] {
        let settings = SwapSettings {
            vram_budget_mb: Some(gib * 1024),
            ..SwapSettings::default()
        };
        let fitted = plan(&units, DType::F16, &settings).unwrap();
        assert!(fitted.swapped_units() > 0);
        assert_eq!(
            fitted.device_bytes(),
            gib * 1024 * MIB,
            "{gib} GiB: the ring takes what the resident weights leave"
        );
        let largest = units
            .iter()
            .zip(&fitted.swapped)
            .filter(|(_, s)| **s)
            .map(|(u, _)| u.bytes(DType::F16))
            .max()
            .unwrap();
        assert!(fitted.buffer_bytes >= (settings.prefetch as u64 + 1) * largest);
    }
    let tiny = SwapSettings {
        vram_budget_mb: Some(64),
        ..SwapSettings::default()
    };
    match plan(&units, DType::F16, &tiny) {
        Err(error @ PlanError::BudgetTooSmall { minimum_mb, .. }) => {
            let message = error.to_string();
            assert!(
                message.starts_with("vram_budget_mb 64 MiB is too small")
                    && message.ends_with(&format!("raise the budget to {minimum_mb} or more")),
                "{message}"
            );
            let at_minimum = SwapSettings {
                vram_budget_mb: Some(minimum_mb),
                ..SwapSettings::default()
            };
            assert!(
                plan(&units, DType::F16, &at_minimum).is_ok(),
                "the named minimum must work"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn budgets_stream_the_stem_and_head_with_the_highest_level_and_block_counts_keep_them() {
    let units = sdxl_units();
    let in_block = |unit: &UnitSpec, blocks: &[&str]| unit.group.block.as_deref().is_some_and(|b| blocks.contains(&b));
    let ends = |swapped: &[bool]| -> Vec<bool> {
        units
            .iter()
            .zip(swapped)
            .filter(|(unit, _)| unit.group.block.is_none() && unit.group.every_pass)
            .map(|(_, &streams)| streams)
            .collect()
    };
    for budget_mb in [2048u64, 3072] {
        let settings = SwapSettings {
            vram_budget_mb: Some(budget_mb),
            ..SwapSettings::default()
        };
        let fitted = plan(&units, DType::F16, &settings).unwrap();
        let highest_level = units
            .iter()
            .zip(&fitted.swapped)
            .filter(|(unit, _)| in_block(unit, &["down_blocks.0", "up_blocks.2"]));
        assert!(highest_level.clone().count() > 0);
        assert!(highest_level.into_iter().all(|(_, &streams)| streams));
        assert_eq!(ends(&fitted.swapped), [true, true], "{budget_mb} MiB");
    }
    let all = SwapSettings {
        blocks_to_swap: 3,
        ..SwapSettings::default()
    };
    assert_eq!(ends(&plan(&units, DType::F16, &all).unwrap().swapped), [false, false]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_plan_within_budget_or_a_minimum_above_it(budget_mb in 1u64..6000, prefetch in 0usize..4) {
        let units = sdxl_units();
        let settings = SwapSettings { vram_budget_mb: Some(budget_mb), prefetch, ..SwapSettings::default() };
        match plan(&units, DType::F16, &settings) {
            Ok(fitted) => prop_assert!(fitted.device_bytes() <= budget_mb * MIB),
            Err(PlanError::BudgetTooSmall { minimum_mb, .. }) => prop_assert!(minimum_mb > budget_mb),
            Err(other) => prop_assert!(false, "{other}"),
        }
    }
}

const GIB: u64 = 1024 * MIB;

#[test]
fn recommendations_follow_free_memory_and_activations() {
    use swapgraph_blockswap::doctor::{recommend, Fit, HEADROOM_FRACTION};
    let units = sdxl_units();
    let roomy = recommend(&units, DType::F16, 24 * GIB, 2 * GIB, 1024, GIB).unwrap();
    assert_eq!(roomy.fit, Fit::Resident);

    let (free, companions, activations) = (8 * GIB, 2 * GIB, 2 * GIB);
    let tight = recommend(&units, DType::F16, free, companions, 1024, activations).unwrap();
    let for_weights = (free as f64 * (1.0 - HEADROOM_FRACTION)) as u64 - activations - companions;
    let Fit::Swap {
        budget_mb,
        blocks_to_swap,
        streamed_bytes,
    } = tight.fit
    else {
        panic!(
            "8 GiB with 2 GiB of activations and 2 GiB of text encoders needs BlockSwap, got {:?}",
            tight.fit
        )
    };
    assert_eq!(budget_mb, for_weights / MIB);
    let budget = SwapSettings {
        vram_budget_mb: Some(budget_mb),
        ..SwapSettings::default()
    };
    let with_budget = plan(&units, DType::F16, &budget).unwrap();
    assert!(with_budget.device_bytes() <= for_weights);
    assert_eq!(streamed_bytes, with_budget.streamed_bytes);
    let blocks = blocks_to_swap.expect("a block count fits 3.4 GiB");
    let by_blocks = |n| {
        let settings = SwapSettings {
            blocks_to_swap: n,
            ..SwapSettings::default()
        };
        plan(&units, DType::F16, &settings).unwrap().device_bytes()
    };
    assert!(by_blocks(blocks) <= for_weights, "the block count fits");
    assert!(
        blocks == 1 || by_blocks(blocks - 1) > for_weights,
        "and is the smallest that does"
    );

    let small = recommend(&units, DType::F16, 3 * GIB, 2 * GIB, 1280, 850 * MIB).unwrap();
    assert!(
        matches!(small.fit, Fit::TooSmall { minimum_mb, available_mb } if minimum_mb > available_mb),
        "{:?}",
        small.fit
    );

    // Kept in 8 bits, half the bytes: where f16 streams, the UNet fits whole, and where f16
    // does not fit even streamed, it streams.
    let eight_bit = recommend(&units, DType::F8E4M3, free, companions, 1024, activations).unwrap();
    assert_eq!(eight_bit.fit, Fit::Resident);
    let small_fp8 = recommend(&units, DType::F8E4M3, 3 * GIB, 2 * GIB, 1280, 850 * MIB).unwrap();
    let minimum = |fit: &Fit| match fit {
        Fit::TooSmall { minimum_mb, .. } => *minimum_mb,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        minimum(&small_fp8.fit) * 2,
        minimum(&small.fit),
        "streaming in 8 bits needs half the room"
    );
}

#[test]
fn a_budget_spreads_the_partly_swapped_level_evenly_through_its_blocks() {
    let units = sdxl_units();
    let deepest = ["down_blocks.2", "mid_block", "up_blocks.0"];
    for budget_mb in [2048u64, 3072, 3584] {
        let settings = SwapSettings {
            vram_budget_mb: Some(budget_mb),
            ..SwapSettings::default()
        };
        let fitted = plan(&units, DType::F16, &settings).unwrap();
        let swapped_share = |blocks: &[&str]| {
            let (mut swapped, mut all) = (0, 0);
            for (unit, &streams) in units.iter().zip(&fitted.swapped) {
                if unit.group.block.as_deref().is_some_and(|b| blocks.contains(&b)) {
                    all += unit.bytes(DType::F16);
                    swapped += if streams { unit.bytes(DType::F16) } else { 0 };
                }
            }
            swapped as f64 / all as f64
        };
        let level = swapped_share(&deepest);
        assert!(
            level > 0.05 && level < 0.95,
            "{budget_mb} MiB swaps part of the deepest level, not {level}"
        );
        for section in deepest {
            let share = swapped_share(&[section]);
            assert!(
                (share - level).abs() < 0.1,
                "{budget_mb} MiB: {section} has {share:.2} of its bytes swapped against {level:.2} for its level"
            );
        }
    }
}

/// A DiT-like network: a patch-embedding stem, 28 transformer blocks of two units each
/// (attention, feed-forward), a head; every block at one rank, in a section with no switch.
fn plain_stack() -> Vec<UnitSpec> {
    let unit = |name: String, group: UnitGroup, mib: usize| UnitSpec {
        name,
        group,
        tensors: vec![("weight".to_string(), (mib << 19).into())],
    };
    let mut units = vec![unit("patch_embed".into(), UnitGroup::outside_blocks(0), 4)];
    for block in 0..28 {
        for (part, mib) in [("attn", 40), ("ff", 80)] {
            let group = UnitGroup::in_block(format!("transformer_blocks.{block}"), "blocks", 0);
            units.push(unit(format!("transformer_blocks.{block}.{part}"), group, mib));
        }
    }
    units.push(unit("proj_out".into(), UnitGroup::outside_blocks(0), 4));
    units
}

#[test]
fn a_plain_stack_of_blocks_is_planned_by_the_same_code() {
    let units = plain_stack();
    // Block counts: its section has no switch of the seed's, so it is always enabled, and the
    // first of its equal blocks go.
    let counted = plan(
        &units,
        DType::F16,
        &SwapSettings {
            blocks_to_swap: 5,
            swap_down: false,
            swap_mid: false,
            swap_up: false,
            ..SwapSettings::default()
        },
    )
    .unwrap();
    let expected: Vec<String> = (0..5).map(|b| format!("transformer_blocks.{b}")).collect();
    assert_eq!(counted.swapped_blocks, expected);
    assert!(
        !counted.swapped[0] && !counted.swapped[units.len() - 1],
        "stem and head stay"
    );

    // A budget of about half the weights streams about half the blocks' units, spread through
    // the stack so that resident compute separates the transfers.
    let total: u64 = units.iter().map(|u| u.bytes(DType::F16)).sum();
    let settings = SwapSettings {
        vram_budget_mb: Some(total / 2 / MIB),
        ..SwapSettings::default()
    };
    let fitted = plan(&units, DType::F16, &settings).unwrap();
    assert!(fitted.device_bytes() <= total / 2);
    let share = fitted.streamed_bytes as f64 / total as f64;
    assert!(share > 0.4 && share < 0.7, "streams {share} of the weights");
    let longest_run = fitted
        .swapped
        .split(|streams| !streams)
        .map(<[bool]>::len)
        .max()
        .unwrap_or(0);
    assert!(longest_run <= 3, "swapped units run {longest_run} in a row");

    // The smallest budget that works is the placement's own: the ring for the largest unit.
    let error = plan(
        &units,
        DType::F16,
        &SwapSettings {
            vram_budget_mb: Some(1),
            ..SwapSettings::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(error, PlanError::BudgetTooSmall { minimum_mb, .. } if minimum_mb >= 80),
        "{error}"
    );
}
