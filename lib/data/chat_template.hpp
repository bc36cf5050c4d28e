// SFT formatting: a conversation rendered as token ids with a loss mask, in the layout one of
// the common Hugging Face chat templates produces, so a model fine-tuned here is prompted the
// same way by transformers, vLLM or llama.cpp afterwards.
//
// No Jinja engine is packaged; the five layouts are written out here and checked in
// tests/unit/chat_template_test.cc against the strings the Hugging Face templates render:
//   kChatML  Qwen2 / ChatML:  <|im_start|>{role}\n{content}<|im_end|>\n  per message (content
//            as is). Qwen's own template adds a default system message when there is none; temper
//            never invents one: give it explicitly to match.
//   kLlama2  Llama-2-chat: <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s>
//            then <s>[INST] {user} [/INST] {assistant} </s> per later exchange (contents stripped,
//            as the template's .strip() does; the system message only in the first turn; roles
//            must alternate user/assistant).
//   kLlama3  Llama-3-instruct: <|begin_of_text|> then
//            <|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|> per message
//            (contents trimmed). Llama-3.1's template adds a dated system preamble; that is not
//            reproduced.
//   kAlpaca  the Alpaca chat template (as in chujiezheng/chat_templates): <s>{system}\n\n then
//            ### Instruction:\n{user}\n\n and ### Response:\n{assistant}</s>\n\n per exchange
//            (contents trimmed, roles alternate). No default preamble: the Stanford one ("Below is an
//            instruction that describes a task...") is a system message like any other.
//   kPlain   temper's own for base models without a template: {role}: {content}\n per message,
//            the assistant's content followed by EOS.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <absl/status/statusor.h>

#include "data/document.hpp"
#include "temper/token.hpp"
#include "temper/tokenizer.hpp"

namespace temper {

enum class ChatTemplate {
  kChatML,  // Qwen2 and ChatML: <|im_start|>role\n...<|im_end|>\n
  kLlama2,  // [INST] <<SYS>>\n...\n<</SYS>>\n\n... [/INST] ... </s>
  kLlama3,  // <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>
  kAlpaca,  // ### Instruction:\n...\n\n### Response:\n...</s>
  kPlain,   // role: content lines
};

// "chatml" (also "qwen", "qwen2"), "llama2" ("llama-2"), "llama3" ("llama-3"), "alpaca",
// "plain"; case-insensitive. Anything else is INVALID_ARGUMENT listing the names.
absl::StatusOr<ChatTemplate> parse_chat_template_name(std::string_view name);
// The canonical name ("chatml", "llama2", "llama3", "alpaca", "plain").
std::string_view chat_template_name(ChatTemplate chat_template);

// The built-in template a Hugging Face model directory's chat template corresponds to, from the
// `chat_template` of tokenizer_config.json (a string, or a list of named templates of which
// "default" is used) or else the file chat_template.jinja; nullopt when there is none, it cannot
// be read, or it is not recognised.
std::optional<ChatTemplate> detect_chat_template(const std::filesystem::path& model_dir);
// Recognition by distinctive markers of the Jinja source, checked in this order:
//   "<|start_header_id|>" and "<|eot_id|>"    -> kLlama3
//   "<|im_start|>" and "<|im_end|>"           -> kChatML
//   "[INST]" and "<<SYS>>"                    -> kLlama2 (Mistral's [INST] template has no <<SYS>>
//                                                and a different layout: not recognised)
//   "### Instruction:" and "### Response:"    -> kAlpaca
std::optional<ChatTemplate> detect_chat_template_source(std::string_view jinja);

struct RenderedExample {
  std::vector<TokenId> ids;
  std::vector<bool> is_target;  // true on tokens the loss covers: assistant content and its end-of-turn token
};

// Renders `messages` with `chat_template` and tokenizes it segment by segment: the parts the loss
// covers (each assistant content and its end-of-turn marker) and the parts it does not are
// tokenized separately and concatenated, so the mask is exact token by token. The price is that
// tokens never merge across a prompt/response boundary, so the ids may differ there from
// tokenizing the whole string. Hugging Face's masking meets the same boundary (a token of the
// whole string may straddle it), and inference tokenizes the prompt before generating too.
//
// Markers (<|im_start|>, <|eot_id|>, ...) become their single special-token ids where the
// tokenizer has them as pieces; otherwise (e.g. the bundled tokenizer) they are tokenized as
// ordinary text, which a model can still learn but costs several tokens each. BOS and EOS are the
// tokenizer's; EOS is required by the templates that end a turn with it (Llama-2, Alpaca, plain).
// `add_bos` starts the example with the beginning-of-sequence token: the tokenizer's BOS
// (<|begin_of_text|> for Llama-3); the Llama-2, Llama-3 and Alpaca templates write it
// themselves, so pass true to match them. Later Llama-2 turns always open with BOS, as in its
// template.
//
// Text right after BOS (or opening the example) is tokenized as the start of a sequence
// (sentencepiece adds its dummy-prefix space, as Meta's Llama-2 encoder does for each turn);
// every other segment as a continuation, without that space.
//
// INVALID_ARGUMENT for no messages, a role other than system/user/assistant, no assistant
// message, and layouts a template cannot express (Llama-2/Alpaca: system only first, then
// user/assistant alternating from a user turn).
absl::StatusOr<RenderedExample> render_chat(ChatTemplate chat_template, const std::vector<ChatMessage>& messages,
                                            const Tokenizer& tokenizer, bool add_bos);

// The text the template renders, BOS and EOS spelt `bos` and `eos` (markers as themselves): what
// Hugging Face's apply_chat_template(messages, tokenize=False) returns, for logs and tests.
absl::StatusOr<std::string> render_chat_text(ChatTemplate chat_template, const std::vector<ChatMessage>& messages,
                                             bool add_bos, std::string_view bos = "<s>",
                                             std::string_view eos = "</s>");

}  // namespace temper
