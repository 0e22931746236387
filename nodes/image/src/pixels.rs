//! Between IMAGE tensors and PNG bytes.

use candle_core::{DType, Device, Tensor};
use swapgraph_node_api::NodeError;

/// The iTXt keyword saved workflows go under.
pub const WORKFLOW_KEYWORD: &str = "workflow";

/// One image `[h, w, 3]` (0..1) as 8-bit RGB PNG bytes, with `workflow` as a UTF-8 text chunk.
///
/// # Errors
/// A message when the tensor has another shape or the encoder fails.
pub fn encode_png(image: &Tensor, workflow: Option<&str>) -> Result<Vec<u8>, NodeError> {
    let failed = |e: &dyn std::fmt::Display| NodeError::msg(format!("cannot encode PNG: {e}"));
    let (h, w, c) = image.dims3().map_err(|e| failed(&e))?;
    if c != 3 {
        return Err(NodeError::msg(format!("expected an RGB image, found {c} channels")));
    }
    let bytes: Vec<u8> = (image
        .to_dtype(DType::F32)
        .and_then(|t| t.clamp(0.0, 1.0))
        .and_then(|t| t * 255.0))
    .and_then(|t| t.round())
    .and_then(|t| t.to_dtype(DType::U8))
    .and_then(|t| t.flatten_all())
    .and_then(|t| t.to_vec1::<u8>())
    .map_err(|e| failed(&e))?;
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, w as u32, h as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    // fdeflate's PNG-tuned compression: several times faster than the default for a little size.
    encoder.set_compression(png::Compression::Fast);
    if let Some(text) = workflow {
        encoder
            .add_itxt_chunk(WORKFLOW_KEYWORD.to_string(), text.to_string())
            .map_err(|e| failed(&e))?;
    }
    let mut writer = encoder.write_header().map_err(|e| failed(&e))?;
    writer.write_image_data(&bytes).map_err(|e| failed(&e))?;
    writer.finish().map_err(|e| failed(&e))?;
    Ok(png)
}

/// The workflow a PNG written by [`encode_png`] carries, if any.
///
/// # Errors
/// A message when the bytes are not a PNG.
pub fn decode_png_workflow(bytes: &[u8]) -> Result<Option<String>, NodeError> {
    Ok(png_texts(bytes)?
        .into_iter()
        .find(|(keyword, _)| keyword == WORKFLOW_KEYWORD)
        .map(|(_, text)| text))
}

/// Every text a PNG carries, keyword and text, in the order of its chunks of each kind (iTXt,
/// then tEXt, then zTXt): swapgraph's workflow, or ComfyUI's `workflow` and `prompt` JSON.
///
/// # Errors
/// A message when the bytes are not a PNG.
pub fn png_texts(bytes: &[u8]) -> Result<Vec<(String, String)>, NodeError> {
    let reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .map_err(|e| NodeError::msg(format!("not a PNG: {e}")))?;
    let info = reader.info();
    let international = info
        .utf8_text
        .iter()
        .filter_map(|chunk| Some((chunk.keyword.clone(), chunk.get_text().ok()?)));
    let latin1 = info
        .uncompressed_latin1_text
        .iter()
        .map(|chunk| (chunk.keyword.clone(), chunk.text.clone()));
    let compressed = info
        .compressed_latin1_text
        .iter()
        .filter_map(|chunk| Some((chunk.keyword.clone(), chunk.get_text().ok()?)));
    Ok(international.chain(latin1).chain(compressed).collect())
}

/// Decoded 8-bit RGB pixels as an IMAGE tensor `[1, h, w, 3]` in 0..1 on `device`.
///
/// # Errors
/// A tensor error.
pub fn rgb_to_tensor(rgb: image::RgbImage, device: &Device) -> candle_core::Result<Tensor> {
    let (w, h) = rgb.dimensions();
    let data: Vec<f32> = rgb.into_raw().into_iter().map(|b| f32::from(b) / 255.0).collect();
    Tensor::from_vec(data, (1, h as usize, w as usize, 3), &Device::Cpu)?.to_device(device)
}
